// SPDX-License-Identifier: GPL-2.0
/*
 * klog_gen - klog load generator for tests and demonstrations
 *
 * Files in /sys/kernel/debug/klog_gen/:
 *   run       writing a decimal N makes every online CPU emit N records
 *             "klog_gen cpu=<cpu> seq=<seq>\n" (seq 0 .. N-1) with
 *             klog_printk() from a work item bound to that CPU; the write
 *             returns when all CPUs are done
 *   emitted   records handed to klog so far, all runs and CPUs together
 *   rejected  how many of them klog did not store (no handler, handler
 *             disabled, buffer full)
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/klog.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/workqueue.h>

struct klog_gen_work {
	struct work_struct work;
	unsigned int cpu;
	unsigned int count;
	u64 emitted;
	u64 rejected;
};

static DEFINE_PER_CPU(struct klog_gen_work, klog_gen_works);
static DEFINE_MUTEX(klog_gen_mutex);	/* one run at a time */
static struct dentry *klog_gen_dir;

static void klog_gen_work_fn(struct work_struct *work)
{
	struct klog_gen_work *w = container_of(work, struct klog_gen_work,
					       work);
	unsigned int seq;

	for (seq = 0; seq < w->count; seq++) {
		if (klog_printk("klog_gen cpu=%u seq=%u\n", w->cpu, seq) <= 0)
			WRITE_ONCE(w->rejected, w->rejected + 1);
		WRITE_ONCE(w->emitted, w->emitted + 1);
		cond_resched();
	}
}

static ssize_t klog_gen_run_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct klog_gen_work *w;
	unsigned int cpu, n;
	int ret;

	ret = kstrtouint_from_user(ubuf, count, 10, &n);
	if (ret)
		return ret;

	mutex_lock(&klog_gen_mutex);
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		w = per_cpu_ptr(&klog_gen_works, cpu);
		w->cpu = cpu;
		w->count = n;
		schedule_work_on(cpu, &w->work);
	}
	for_each_online_cpu(cpu)
		flush_work(&per_cpu_ptr(&klog_gen_works, cpu)->work);
	cpus_read_unlock();
	mutex_unlock(&klog_gen_mutex);

	return count;
}

static const struct file_operations klog_gen_run_fops = {
	.owner	= THIS_MODULE,
	.write	= klog_gen_run_write,
	.llseek	= noop_llseek,
};

static u64 klog_gen_sum(bool rejected)
{
	struct klog_gen_work *w;
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&klog_gen_works, cpu);
		sum += rejected ? READ_ONCE(w->rejected) : READ_ONCE(w->emitted);
	}
	return sum;
}

static int klog_gen_emitted_get(void *data, u64 *val)
{
	*val = klog_gen_sum(false);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(klog_gen_emitted_fops, klog_gen_emitted_get, NULL,
			 "%llu\n");

static int klog_gen_rejected_get(void *data, u64 *val)
{
	*val = klog_gen_sum(true);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(klog_gen_rejected_fops, klog_gen_rejected_get, NULL,
			 "%llu\n");

static int __init klog_gen_init(void)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&klog_gen_works, cpu)->work,
			  klog_gen_work_fn);

	klog_gen_dir = debugfs_create_dir("klog_gen", NULL);
	debugfs_create_file("run", 0200, klog_gen_dir, NULL,
			    &klog_gen_run_fops);
	debugfs_create_file_unsafe("emitted", 0444, klog_gen_dir, NULL,
				   &klog_gen_emitted_fops);
	debugfs_create_file_unsafe("rejected", 0444, klog_gen_dir, NULL,
				   &klog_gen_rejected_fops);
	return 0;
}
module_init(klog_gen_init);

static void __exit klog_gen_exit(void)
{
	/* Waits for a run in progress. */
	debugfs_remove_recursive(klog_gen_dir);
}
module_exit(klog_gen_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klog load generator");
