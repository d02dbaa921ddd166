// SPDX-License-Identifier: GPL-2.0
/*
 * relay_tprintk - the tprintk example: a copy of printk output in a relay
 * channel
 *
 * A console is the simplest way for a module to get printk output as it
 * is printed: text, whole lines, in order, from every context, with no
 * hook into printk itself (kmsg_dump runs only on oops and panic, the
 * printk ring buffer has no reader interface for modules).  This one
 * hands what printk gives it to relay_app_write() for the global channel
 * /sys/kernel/debug/relay_tprintk/cpu0.  printk calls it with the console
 * lock held and interrupts disabled, from whichever CPU prints or flushes
 * the consoles; messages printed in NMI reach it later.  One global
 * buffer keeps printk's order, which per-CPU buffers would scatter by the
 * CPU that happened to flush.  Like every console it receives the
 * messages that the console loglevel lets through, formatted as a serial
 * console shows them; it registers enabled and without CON_PRINTBUFFER,
 * so it gets only messages printed after it was loaded.
 */

#include <linux/console.h>
#include <linux/err.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

#include "relay_app.h"

static ulong subbuf_size = 65536;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 65536)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers (default 8)");

static struct relay_app *relay_tprintk_app;

static void relay_tprintk_write(struct console *con, const char *s,
				unsigned int count)
{
	/* A refused message shows in the relay_app "dropped" file. */
	relay_app_write(relay_tprintk_app, s, count);
}

static struct console relay_tprintk_console = {
	.name	= "relay",
	.write	= relay_tprintk_write,
	.flags	= CON_ENABLED,
	.index	= -1,
};

static int __init relay_tprintk_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.global		= true,
	};

	relay_tprintk_app = relay_app_create("relay_tprintk", NULL, &params);
	if (IS_ERR(relay_tprintk_app))
		return PTR_ERR(relay_tprintk_app);
	register_console(&relay_tprintk_console);
	return 0;
}
module_init(relay_tprintk_init);

static void __exit relay_tprintk_exit(void)
{
	/* Waits for a write in progress. */
	unregister_console(&relay_tprintk_console);
	relay_app_destroy(relay_tprintk_app);
}
module_exit(relay_tprintk_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay tprintk example: a copy of printk output");
