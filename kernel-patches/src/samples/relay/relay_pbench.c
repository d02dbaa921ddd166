// SPDX-License-Identifier: GPL-2.0
/*
 * relay_pbench - producer-side cost per event of the ways to log
 *
 * Writing N to /sys/kernel/debug/relay_pbench/run times N events of each
 * kind on the writing CPU with preemption disabled, best of
 * RELAY_PBENCH_ROUNDS rounds; /sys/kernel/debug/relay_pbench/results then
 * holds one line "NAME NS_TOTAL EVENTS" per kind:
 *   empty         a call of an empty function taking the record
 *   klog          klog() of a 64-byte record (off while no klog handler
 *                 is registered, through the handler otherwise: load
 *                 relay_klog first to time it on)
 *   relay_write   relay_write() of the same record into a relay channel
 *                 of this module (overwrite mode, never read)
 *   trace_printk  trace_printk() of a sequence number
 * and "klog_handler 0|1", whether klog() reached a handler.
 */

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/klog.h>
#include <linux/kstrtox.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/relay.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#define RELAY_PBENCH_RECORD	64
#define RELAY_PBENCH_ROUNDS	5
#define RELAY_PBENCH_MAX_EVENTS	10000000UL

static ulong subbuf_size = 262144;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size of the relay_write channel (default 262144)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU of the relay_write channel (default 8)");

enum relay_pbench_kind {
	PBENCH_EMPTY,
	PBENCH_KLOG,
	PBENCH_RELAY_WRITE,
	PBENCH_TRACE_PRINTK,
	PBENCH_KINDS,
};

static const char * const relay_pbench_names[PBENCH_KINDS] = {
	[PBENCH_EMPTY]		= "empty",
	[PBENCH_KLOG]		= "klog",
	[PBENCH_RELAY_WRITE]	= "relay_write",
	[PBENCH_TRACE_PRINTK]	= "trace_printk",
};

static DEFINE_MUTEX(relay_pbench_mutex);	/* one run at a time */
static u64 relay_pbench_ns[PBENCH_KINDS];
static unsigned long relay_pbench_events;
static bool relay_pbench_klog_on;
static struct rchan *relay_pbench_chan;
static struct dentry *relay_pbench_dir;
static u8 relay_pbench_record[RELAY_PBENCH_RECORD];

/* The baseline: a call the compiler can neither inline nor drop. */
static noinline int relay_pbench_empty(const void *data, size_t len)
{
	barrier();
	return len;
}

static u64 relay_pbench_round(enum relay_pbench_kind kind, unsigned long n)
{
	unsigned long i;
	u64 start, end;
	int ret = 0;

	preempt_disable();
	start = ktime_get_ns();
	for (i = 0; i < n; i++) {
		switch (kind) {
		case PBENCH_EMPTY:
			ret = relay_pbench_empty(relay_pbench_record,
						 sizeof(relay_pbench_record));
			break;
		case PBENCH_KLOG:
			ret = klog(relay_pbench_record,
				   sizeof(relay_pbench_record));
			break;
		case PBENCH_RELAY_WRITE:
			relay_write(relay_pbench_chan, relay_pbench_record,
				    sizeof(relay_pbench_record));
			break;
		default:
			/* The contender timed here, as samples/trace_printk. */
			trace_printk("relay_pbench seq=%lu\n", i);
			break;
		}
	}
	end = ktime_get_ns();
	preempt_enable();
	if (kind == PBENCH_KLOG)
		relay_pbench_klog_on = ret > 0;
	return end - start;
}

static ssize_t relay_pbench_run_write(struct file *file,
				      const char __user *ubuf, size_t count,
				      loff_t *ppos)
{
	unsigned long n;
	int kind, round;
	int ret;

	ret = kstrtoul_from_user(ubuf, count, 0, &n);
	if (ret)
		return ret;
	if (!n || n > RELAY_PBENCH_MAX_EVENTS)
		return -EINVAL;

	mutex_lock(&relay_pbench_mutex);
	for (kind = 0; kind < PBENCH_KINDS; kind++) {
		u64 best = U64_MAX;

		for (round = 0; round < RELAY_PBENCH_ROUNDS; round++) {
			best = min(best, relay_pbench_round(kind, n));
			cond_resched();
		}
		relay_pbench_ns[kind] = best;
	}
	relay_pbench_events = n;
	mutex_unlock(&relay_pbench_mutex);
	return count;
}

static const struct file_operations relay_pbench_run_fops = {
	.owner	= THIS_MODULE,
	.write	= relay_pbench_run_write,
};

static int relay_pbench_results_show(struct seq_file *m, void *v)
{
	int kind;

	mutex_lock(&relay_pbench_mutex);
	for (kind = 0; kind < PBENCH_KINDS; kind++)
		seq_printf(m, "%s %llu %lu\n", relay_pbench_names[kind],
			   relay_pbench_ns[kind], relay_pbench_events);
	seq_printf(m, "klog_handler %d\n", relay_pbench_klog_on);
	mutex_unlock(&relay_pbench_mutex);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(relay_pbench_results);

/* Overwrite mode: relay_write() never drops, nobody reads the channel. */
static int relay_pbench_subbuf_start(struct rchan_buf *buf, void *subbuf,
#ifdef RELAY_SUBBUF_START_PREV_PADDING
				     void *prev_subbuf, size_t prev_padding)
#else
				     void *prev_subbuf)
#endif
{
	return 1;
}

static struct dentry *
relay_pbench_create_buf_file(const char *filename, struct dentry *parent,
			     umode_t mode, struct rchan_buf *buf,
			     int *is_global)
{
	return debugfs_create_file(filename, mode, parent, buf,
				   &relay_file_operations);
}

static int relay_pbench_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

static const struct rchan_callbacks relay_pbench_callbacks = {
	.subbuf_start		= relay_pbench_subbuf_start,
	.create_buf_file	= relay_pbench_create_buf_file,
	.remove_buf_file	= relay_pbench_remove_buf_file,
};

static int __init relay_pbench_init(void)
{
	int i;

	for (i = 0; i < RELAY_PBENCH_RECORD; i++)
		relay_pbench_record[i] = i;

	relay_pbench_dir = debugfs_create_dir("relay_pbench", NULL);
	relay_pbench_chan = relay_open("chan", relay_pbench_dir, subbuf_size,
				       n_subbufs, &relay_pbench_callbacks,
				       NULL);
	if (!relay_pbench_chan) {
		debugfs_remove_recursive(relay_pbench_dir);
		return -ENOMEM;
	}
	debugfs_create_file("run", 0200, relay_pbench_dir, NULL,
			    &relay_pbench_run_fops);
	debugfs_create_file("results", 0444, relay_pbench_dir, NULL,
			    &relay_pbench_results_fops);
	return 0;
}
module_init(relay_pbench_init);

static void __exit relay_pbench_exit(void)
{
	/* The files first: no run is in progress once they are gone. */
	debugfs_lookup_and_remove("run", relay_pbench_dir);
	debugfs_lookup_and_remove("results", relay_pbench_dir);
	relay_close(relay_pbench_chan);
	debugfs_remove_recursive(relay_pbench_dir);
}
module_exit(relay_pbench_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay producer-side microbenchmark: cost per event of klog, relay_write, trace_printk");
