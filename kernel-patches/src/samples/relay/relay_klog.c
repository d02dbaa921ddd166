// SPDX-License-Identifier: GPL-2.0
/*
 * relay_klog - a klog handler writing every record into a relay channel
 *
 * The channel's directory is relay_klog at the debugfs root: per-CPU
 * buffers /sys/kernel/debug/relay_klog/cpu0 .. cpuN-1 (or the global
 * buffer cpu0) and the relay_app control files.
 *
 * With headers=1 every record starts with struct relay_klog_hdr, so that
 * records can be told apart (raw klog() records need not be text) and
 * decoded with their CPU, context and time (relay-klog decode).
 *
 * With padding_size_t=1 the padding word at the start of every sub-buffer
 * is a size_t, as some copies of relay-apps' klog module write it,
 * instead of an unsigned int: a channel of the other kind for readers of
 * the padding-word protocol.
 */

#include <linux/err.h>
#include <linux/irqflags.h>
#include <linux/klog.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/preempt.h>
#include <linux/smp.h>
#include <linux/timekeeping.h>
#include <linux/uio.h>

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

static bool headers;
module_param(headers, bool, 0444);
MODULE_PARM_DESC(headers, "Start every record with struct relay_klog_hdr (default 0)");

static bool padding_size_t;
module_param(padding_size_t, bool, 0444);
MODULE_PARM_DESC(padding_size_t, "Padding word is a size_t, not an unsigned int (default 0)");

#define RELAY_KLOG_MAGIC	0x6b6c	/* "kl" in a little-endian dump */

/* The context of a klog call, in struct relay_klog_hdr. */
enum relay_klog_ctx {
	RELAY_KLOG_PROCESS,
	RELAY_KLOG_SOFTIRQ,
	RELAY_KLOG_HARDIRQ,
	RELAY_KLOG_NMI,
};

/**
 * struct relay_klog_hdr - header of a record with headers=1
 * @magic: RELAY_KLOG_MAGIC
 * @context: enum relay_klog_ctx of the klog call
 * @reserved: zero
 * @cpu: CPU the record was written on
 * @len: bytes of the record that follow the header
 * @reserved2: zero
 * @time_ns: ktime_get_mono_fast_ns() when it was written
 *
 * 24 bytes in native byte order; records follow each other unaligned.
 */
struct relay_klog_hdr {
	u16 magic;
	u8 context;
	u8 reserved;
	u32 cpu;
	u32 len;
	u32 reserved2;
	u64 time_ns;
};

static_assert(sizeof(struct relay_klog_hdr) == 24);

static struct relay_app *relay_klog_app;

static u8 relay_klog_context(void)
{
	if (in_nmi())
		return RELAY_KLOG_NMI;
	if (in_hardirq())
		return RELAY_KLOG_HARDIRQ;
	if (in_serving_softirq())
		return RELAY_KLOG_SOFTIRQ;
	return RELAY_KLOG_PROCESS;
}

static int relay_klog_log(const void *data, size_t len)
{
	struct relay_klog_hdr hdr = {
		.magic		= RELAY_KLOG_MAGIC,
		.context	= relay_klog_context(),
		.len		= len,
	};
	struct kvec vec[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	unsigned long flags;
	int ret;

	if (!headers)
		return relay_app_write(relay_klog_app, data, len);

	/* The CPU in the header is the one whose buffer gets the record. */
	local_irq_save(flags);
	hdr.cpu = smp_processor_id();
	hdr.time_ns = ktime_get_mono_fast_ns();
	ret = relay_app_writev(relay_klog_app, vec, ARRAY_SIZE(vec));
	local_irq_restore(flags);
	return ret;
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
		.padding_size_t	= padding_size_t,
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
