// SPDX-License-Identifier: GPL-2.0
/*
 * relay_read - the read(2) example: a relay channel whose sub-buffers
 * hold nothing but records, for readers that use read(2) alone
 *
 * The channel is a raw relay_app channel (no padding word at the start of
 * each sub-buffer), so read(2) on /sys/kernel/debug/relay_read/cpuN
 * returns the records back to back: relay's read skips the padding at
 * the end of each sub-buffer and consumes what it returns.  The relay_app
 * control files work as usual, except that there is no padding word for
 * relay-apps style mmap readers; mmap readers use the ioctls instead.
 *
 * Writing a decimal N to /sys/kernel/debug/relay_read/run makes every
 * online CPU write N text records "relay_read cpu=<cpu> seq=<seq> <x..>\n"
 * from a work item bound to it, seq 0 .. N-1, with seq % 64 filler
 * characters so that records vary in length and sub-buffers end with
 * padding of varying size; the write returns when all CPUs are done.
 * "dropped" counts records the channel refused.
 */

#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/workqueue.h>

#include "relay_app.h"
#include "relay_sample.h"

static ulong subbuf_size = 16384;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 16384)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 8)");

static DEFINE_PER_CPU(struct relay_sample_work, relay_read_works);
static DEFINE_MUTEX(relay_read_mutex);	/* one run at a time */
static unsigned int relay_read_count;	/* records per CPU in a run */
static struct relay_app *relay_read_app;
static struct dentry *relay_read_run;

static void relay_read_work_fn(struct work_struct *work)
{
	static const char filler[64] =
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	struct relay_sample_work *w = container_of(work, struct relay_sample_work,
						   work);
	char rec[128];
	unsigned int seq;
	int len;

	for (seq = 0; seq < relay_read_count; seq++) {
		len = scnprintf(rec, sizeof(rec), "relay_read cpu=%u seq=%u %.*s\n",
				w->cpu, seq, (int)(seq % sizeof(filler)),
				filler);
		/* A refused record shows in the relay_app "dropped" file. */
		relay_app_write(relay_read_app, rec, len);
		cond_resched();
	}
}

static ssize_t relay_read_run_write(struct file *file, const char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	unsigned int n;
	int ret;

	ret = kstrtouint_from_user(ubuf, count, 10, &n);
	if (ret)
		return ret;

	mutex_lock(&relay_read_mutex);
	relay_read_count = n;
	relay_sample_run_on_cpus(&relay_read_works);
	mutex_unlock(&relay_read_mutex);

	return count;
}

static const struct file_operations relay_read_run_fops = {
	.owner	= THIS_MODULE,
	.write	= relay_read_run_write,
	.llseek	= noop_llseek,
};

static int __init relay_read_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.raw		= true,
	};
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&relay_read_works, cpu)->work,
			  relay_read_work_fn);

	relay_read_app = relay_app_create("relay_read", NULL, &params);
	if (IS_ERR(relay_read_app))
		return PTR_ERR(relay_read_app);
	relay_read_run = debugfs_create_file("run", 0200,
					     relay_app_dir(relay_read_app),
					     NULL, &relay_read_run_fops);
	return 0;
}
module_init(relay_read_init);

static void __exit relay_read_exit(void)
{
	/* Waits for a run in progress. */
	debugfs_remove(relay_read_run);
	relay_app_destroy(relay_read_app);
}
module_exit(relay_read_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay read(2) example: a channel without sub-buffer headers");
