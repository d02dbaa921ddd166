// SPDX-License-Identifier: GPL-2.0
/*
 * relay_bench - a relay producer running at full speed, for reader
 * benchmarks and stress tests
 *
 * The channel is a relay_app channel in /sys/kernel/debug/relay_bench/
 * (buffers cpu0 .. cpuN-1 and the relay_app control files).  The load is
 * driven from /sys/kernel/debug/relay_bench_ctl/:
 *   run       writing "BYTES SIZE [RATE]" makes every online CPU write
 *             records of SIZE bytes until BYTES bytes were offered, from a
 *             work item bound to that CPU, at RATE MiB/s per CPU (0 or
 *             none: as fast as it can); the write returns when all CPUs
 *             are done
 *   written   records stored, all runs and CPUs together
 *   dropped   records the channel refused (buffer full, disabled)
 *   max_pause_ns
 *             the longest a worker of the last run was kept from writing
 *             (by the reader, interrupts, other tasks, or a virtual CPU
 *             that its host did not run), sampled every 16 records; its
 *             own sleeps at a paced RATE do not count
 *
 * Each record starts with struct relay_bench_record (CPU, sequence number
 * per CPU, length); the rest is a byte pattern derived from the sequence
 * number, so that a reader can check every record it got.
 */

#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "relay_app.h"
#include "relay_sample.h"

static ulong subbuf_size = 262144;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 262144)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 8)");

static bool overwrite;
module_param(overwrite, bool, 0444);
MODULE_PARM_DESC(overwrite, "Overwrite unconsumed data when full (default 0)");

#define RELAY_BENCH_MIN_RECORD	16
#define RELAY_BENCH_MAX_RECORD	65536

/* Header of every record, in native byte order. */
struct relay_bench_record {
	u32 cpu;
	u32 len;
	u64 seq;
};

struct relay_bench_work {
	struct relay_sample_work on_cpu;
	u64 seq;
	u64 written;
	u64 dropped;
	u64 max_pause;	/* ns, this run */
};

/* What every CPU writes in a run. */
struct relay_bench_run {
	u64 bytes;
	u32 size;
	u32 rate;	/* MiB/s, 0 for full speed */
};

static DEFINE_PER_CPU(struct relay_bench_work, relay_bench_works);
static DEFINE_MUTEX(relay_bench_mutex);	/* one run at a time */
static struct relay_bench_run relay_bench_args;
static struct relay_app *relay_bench_app;
static struct dentry *relay_bench_dir;

static void relay_bench_work_fn(struct work_struct *work)
{
	struct relay_bench_work *w = container_of(work, struct relay_bench_work,
						  on_cpu.work);
	const struct relay_bench_run *run = &relay_bench_args;
	struct relay_bench_record *rec;
	u64 offered, start = ktime_get_ns(), due, now, last = start;

	WRITE_ONCE(w->max_pause, 0);
	rec = kmalloc(run->size, GFP_KERNEL);
	if (!rec)
		return;
	rec->cpu = w->on_cpu.cpu;
	rec->len = run->size;
	for (offered = 0; offered < run->bytes; offered += run->size) {
		if (run->rate) {
			/* When this record is due at RATE MiB/s. */
			due = start + div_u64(offered * NSEC_PER_SEC,
					      (u64)run->rate << 20);
			if (ktime_get_ns() + NSEC_PER_MSEC < due) {
				usleep_range(1000, 2000);
				last = ktime_get_ns();
			}
		}
		rec->seq = w->seq++;
		/* The payload byte pattern follows the sequence number. */
		memset(rec + 1, (u8)rec->seq, run->size - sizeof(*rec));
		if (relay_app_write(relay_bench_app, rec, run->size))
			WRITE_ONCE(w->dropped, w->dropped + 1);
		else
			WRITE_ONCE(w->written, w->written + 1);
		cond_resched();
		/* Every 16 records: the clock stays off the hot path. */
		if (!(w->seq & 15)) {
			now = ktime_get_ns();
			if (now - last > w->max_pause)
				WRITE_ONCE(w->max_pause, now - last);
			last = now;
		}
	}
	kfree(rec);
}

static ssize_t relay_bench_run_write(struct file *file,
				     const char __user *ubuf, size_t count,
				     loff_t *ppos)
{
	struct relay_bench_run run = {};
	char kbuf[64];

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	if (sscanf(kbuf, "%llu %u %u", &run.bytes, &run.size, &run.rate) < 2 ||
	    run.size < RELAY_BENCH_MIN_RECORD ||
	    run.size > RELAY_BENCH_MAX_RECORD)
		return -EINVAL;

	mutex_lock(&relay_bench_mutex);
	relay_bench_args = run;
	relay_sample_run_on_cpus(&relay_bench_works.on_cpu);
	mutex_unlock(&relay_bench_mutex);

	return count;
}

static const struct file_operations relay_bench_run_fops = {
	.owner	= THIS_MODULE,
	.write	= relay_bench_run_write,
	.llseek	= noop_llseek,
};

static u64 relay_bench_sum(bool dropped)
{
	struct relay_bench_work *w;
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&relay_bench_works, cpu);
		sum += dropped ? READ_ONCE(w->dropped) : READ_ONCE(w->written);
	}
	return sum;
}

static int relay_bench_written_get(void *data, u64 *val)
{
	*val = relay_bench_sum(false);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_bench_written_fops, relay_bench_written_get,
			 NULL, "%llu\n");

static int relay_bench_dropped_get(void *data, u64 *val)
{
	*val = relay_bench_sum(true);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_bench_dropped_fops, relay_bench_dropped_get,
			 NULL, "%llu\n");

static int relay_bench_max_pause_get(void *data, u64 *val)
{
	struct relay_bench_work *w;
	unsigned int cpu;
	u64 longest = 0;

	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&relay_bench_works, cpu);
		longest = max(longest, READ_ONCE(w->max_pause));
	}
	*val = longest;
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_bench_max_pause_fops, relay_bench_max_pause_get,
			 NULL, "%llu\n");

static int __init relay_bench_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.overwrite	= overwrite,
	};
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&relay_bench_works, cpu)->on_cpu.work,
			  relay_bench_work_fn);

	relay_bench_app = relay_app_create("relay_bench", NULL, &params);
	if (IS_ERR(relay_bench_app))
		return PTR_ERR(relay_bench_app);

	relay_bench_dir = debugfs_create_dir("relay_bench_ctl", NULL);
	debugfs_create_file("run", 0200, relay_bench_dir, NULL,
			    &relay_bench_run_fops);
	debugfs_create_file_unsafe("written", 0444, relay_bench_dir, NULL,
				   &relay_bench_written_fops);
	debugfs_create_file_unsafe("dropped", 0444, relay_bench_dir, NULL,
				   &relay_bench_dropped_fops);
	debugfs_create_file_unsafe("max_pause_ns", 0444, relay_bench_dir, NULL,
				   &relay_bench_max_pause_fops);
	return 0;
}
module_init(relay_bench_init);

static void __exit relay_bench_exit(void)
{
	/* Waits for a run in progress, so no write follows the destroy. */
	debugfs_remove_recursive(relay_bench_dir);
	relay_app_destroy(relay_bench_app);
}
module_exit(relay_bench_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay producer at full speed, for reader benchmarks");
