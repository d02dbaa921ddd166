// SPDX-License-Identifier: GPL-2.0
/*
 * relay_klog - a klog handler writing every record into a relay channel
 *
 * The channel's directory is relay_klog at the debugfs root: per-CPU
 * buffers /sys/kernel/debug/relay_klog/cpu0 .. cpuN-1 (or the global
 * buffer cpu0) and the relay_app control files.
 */

#include <linux/err.h>
#include <linux/klog.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

#include "relay_app.h"

static ulong subbuf_size = 262144;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 262144)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 8)");

static bool overwrite;
module_param(overwrite, bool, 0444);
MODULE_PARM_DESC(overwrite, "Overwrite unconsumed data when full (default 0)");

static bool global;
module_param(global, bool, 0444);
MODULE_PARM_DESC(global, "One buffer for all CPUs instead of one per CPU (default 0)");

static struct relay_app *relay_klog_app;

static int relay_klog_log(const void *data, size_t len)
{
	return relay_app_write(relay_klog_app, data, len);
}

static const struct klog_handler_ops relay_klog_ops = {
	.log = relay_klog_log,
};

static int __init relay_klog_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.overwrite	= overwrite,
		.global		= global,
	};
	int ret;

	relay_klog_app = relay_app_create("relay_klog", NULL, &params);
	if (IS_ERR(relay_klog_app))
		return PTR_ERR(relay_klog_app);

	ret = register_klog_handler(&relay_klog_ops);
	if (ret) {
		relay_app_destroy(relay_klog_app);
		return ret;
	}
	return 0;
}
module_init(relay_klog_init);

static void __exit relay_klog_exit(void)
{
	/* No relay_klog_log() call is in progress after this. */
	unregister_klog_handler(&relay_klog_ops);
	relay_app_destroy(relay_klog_app);
}
module_exit(relay_klog_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klog handler writing records into a relay channel");
