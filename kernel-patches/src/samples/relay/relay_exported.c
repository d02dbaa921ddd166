// SPDX-License-Identifier: GPL-2.0
/*
 * relay_exported - the exported-relayfile example: relay files created by
 * the client in debugfs with relay's exported file operations, one
 * channel with a buffer per CPU and one with a single global buffer, side
 * by side
 *
 * /sys/kernel/debug/relay_exported/
 *   percpu/cpu0 .. cpuN-1   per-CPU channel (relay_app files beside them)
 *   global/cpu0             global channel: one buffer for every CPU
 *   run                     writing a decimal N makes every online CPU
 *                           write N records "relay_exported cpu=<cpu>
 *                           seq=<seq>\n" (seq 0 .. N-1) into both
 *                           channels from a work item bound to it;
 *                           returns when all CPUs are done
 *
 * relay_app creates the buffer files with relay_file_operations (plus its
 * ioctls) through the create_buf_file callback; for the global channel
 * the callback sets *is_global, so relay makes one buffer, cpu0, and
 * relay_app serialises its writers with a spinlock.  Each per-CPU buffer
 * gets its CPU's records in order; the global buffer gets everyone's,
 * each CPU's in order, interleaved.
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
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per buffer (default 8)");

static DEFINE_PER_CPU(struct relay_sample_work, relay_exported_works);
static DEFINE_MUTEX(relay_exported_mutex);	/* one run at a time */
static unsigned int relay_exported_count;	/* records per CPU in a run */
static struct relay_app *relay_exported_percpu;
static struct relay_app *relay_exported_global;
static struct dentry *relay_exported_dir;
static struct dentry *relay_exported_run;

static void relay_exported_work_fn(struct work_struct *work)
{
	struct relay_sample_work *w =
		container_of(work, struct relay_sample_work, work);
	unsigned int seq;
	char rec[64];
	int len;

	for (seq = 0; seq < relay_exported_count; seq++) {
		len = scnprintf(rec, sizeof(rec),
				"relay_exported cpu=%u seq=%u\n", w->cpu, seq);
		/* Refused records show in each channel's "dropped" file. */
		relay_app_write(relay_exported_percpu, rec, len);
		relay_app_write(relay_exported_global, rec, len);
		cond_resched();
	}
}

static ssize_t relay_exported_run_write(struct file *file,
					const char __user *ubuf, size_t count,
					loff_t *ppos)
{
	unsigned int n;
	int ret;

	ret = kstrtouint_from_user(ubuf, count, 10, &n);
	if (ret)
		return ret;

	mutex_lock(&relay_exported_mutex);
	relay_exported_count = n;
	relay_sample_run_on_cpus(&relay_exported_works);
	mutex_unlock(&relay_exported_mutex);

	return count;
}

static const struct file_operations relay_exported_run_fops = {
	.owner	= THIS_MODULE,
	.write	= relay_exported_run_write,
	.llseek	= noop_llseek,
};

static int __init relay_exported_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
	};
	unsigned int cpu;
	int ret;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&relay_exported_works, cpu)->work,
			  relay_exported_work_fn);

	relay_exported_dir = debugfs_create_dir("relay_exported", NULL);
	if (IS_ERR(relay_exported_dir))
		return PTR_ERR(relay_exported_dir);

	relay_exported_percpu = relay_app_create("percpu", relay_exported_dir,
						 &params);
	if (IS_ERR(relay_exported_percpu)) {
		ret = PTR_ERR(relay_exported_percpu);
		goto err_dir;
	}
	params.global = true;
	relay_exported_global = relay_app_create("global", relay_exported_dir,
						 &params);
	if (IS_ERR(relay_exported_global)) {
		ret = PTR_ERR(relay_exported_global);
		goto err_percpu;
	}

	relay_exported_run = debugfs_create_file("run", 0200,
						 relay_exported_dir, NULL,
						 &relay_exported_run_fops);
	return 0;

err_percpu:
	relay_app_destroy(relay_exported_percpu);
err_dir:
	debugfs_remove(relay_exported_dir);
	return ret;
}
module_init(relay_exported_init);

static void __exit relay_exported_exit(void)
{
	/* Waits for a run in progress. */
	debugfs_remove(relay_exported_run);
	relay_app_destroy(relay_exported_global);
	relay_app_destroy(relay_exported_percpu);
	debugfs_remove(relay_exported_dir);
}
module_exit(relay_exported_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay exported-relayfile example: per-CPU and global channels side by side");
