// SPDX-License-Identifier: GPL-2.0
/*
 * klog_gen - klog load generator for tests and demonstrations
 *
 * Files in /sys/kernel/debug/klog_gen/:
 *   run       writing a decimal N makes every online CPU emit N records
 *             "klog_gen cpu=<cpu> seq=<seq>\n" (seq 0 .. N-1) with
 *             klog_printk() from a work item bound to that CPU; the write
 *             returns when all CPUs are done.
 *             Writing "N CONTEXT" emits them from CONTEXT instead:
 *             process (the work item), softirq (a timer on that CPU),
 *             hardirq (an irq_work raised on that CPU) or all (N from
 *             each of the three, one after the other), tagged with the
 *             context klog_printk() was called from as the kernel saw it:
 *             "klog_gen cpu=<cpu> ctx=<process|softirq|hardirq> seq=<seq>\n",
 *             seq counting from 0 for every CPU and context.  Timer and
 *             irq_work callbacks emit up to 64 records per call.
 *   emitted   records handed to klog so far, all runs and CPUs together
 *   rejected  how many of them klog did not store (no handler, handler
 *             disabled, buffer full)
 */

#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/irq_work.h>
#include <linux/jiffies.h>
#include <linux/klog.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "relay_sample.h"

/* Records per timer or irq_work callback. */
#define KLOG_GEN_CHUNK	64

enum klog_gen_ctx {
	KLOG_GEN_PROCESS,
	KLOG_GEN_SOFTIRQ,
	KLOG_GEN_HARDIRQ,
	KLOG_GEN_NR_CTX,
};

static const char * const klog_gen_ctx_names[KLOG_GEN_NR_CTX] = {
	[KLOG_GEN_PROCESS]	= "process",
	[KLOG_GEN_SOFTIRQ]	= "softirq",
	[KLOG_GEN_HARDIRQ]	= "hardirq",
};

struct klog_gen_work {
	struct relay_sample_work on_cpu;
	struct timer_list timer;
	struct irq_work irq_work;
	struct completion chunk_done;
	unsigned int seq;	/* next record of the current context */
	u64 emitted;
	u64 rejected;
};

/* What every CPU emits in a run. */
struct klog_gen_run {
	unsigned int count;
	unsigned int ctx_mask;	/* contexts to emit from; 0: untagged */
};

static DEFINE_PER_CPU(struct klog_gen_work, klog_gen_works);
static DEFINE_MUTEX(klog_gen_mutex);	/* one run at a time */
static struct klog_gen_run klog_gen_args;
static struct dentry *klog_gen_dir;

/* The context the caller runs in, as the record's tag says it. */
static const char *klog_gen_ctx_now(void)
{
	if (in_hardirq())
		return klog_gen_ctx_names[KLOG_GEN_HARDIRQ];
	if (in_serving_softirq())
		return klog_gen_ctx_names[KLOG_GEN_SOFTIRQ];
	if (in_task())
		return klog_gen_ctx_names[KLOG_GEN_PROCESS];
	return "other";
}

/* Emit up to @max tagged records; returns true when all are done. */
static bool klog_gen_emit_tagged(struct klog_gen_work *w, unsigned int max)
{
	unsigned int end = min(klog_gen_args.count, w->seq + max);

	for (; w->seq < end; w->seq++) {
		if (klog_printk("klog_gen cpu=%u ctx=%s seq=%u\n",
				smp_processor_id(), klog_gen_ctx_now(),
				w->seq) <= 0)
			WRITE_ONCE(w->rejected, w->rejected + 1);
		WRITE_ONCE(w->emitted, w->emitted + 1);
	}
	return w->seq == klog_gen_args.count;
}

static void klog_gen_timer_fn(struct timer_list *t)
{
	struct klog_gen_work *w = container_of(t, struct klog_gen_work, timer);

	klog_gen_emit_tagged(w, KLOG_GEN_CHUNK);
	complete(&w->chunk_done);
}

static void klog_gen_irq_work_fn(struct irq_work *iw)
{
	struct klog_gen_work *w = container_of(iw, struct klog_gen_work,
					       irq_work);

	klog_gen_emit_tagged(w, KLOG_GEN_CHUNK);
	complete(&w->chunk_done);
}

/*
 * Emit klog_gen_args.count tagged records from @ctx on this CPU; runs in
 * the work item bound to it, which waits for each timer or irq_work chunk.
 */
static void klog_gen_run_ctx(struct klog_gen_work *w, enum klog_gen_ctx ctx)
{
	w->seq = 0;
	while (w->seq < klog_gen_args.count) {
		reinit_completion(&w->chunk_done);
		switch (ctx) {
		case KLOG_GEN_PROCESS:
			klog_gen_emit_tagged(w, KLOG_GEN_CHUNK);
			cond_resched();
			continue;
		case KLOG_GEN_SOFTIRQ:
			w->timer.expires = jiffies;
			add_timer_on(&w->timer, w->on_cpu.cpu);
			break;
		case KLOG_GEN_HARDIRQ:
			/* Queued on this CPU, which raises an interrupt. */
			irq_work_queue(&w->irq_work);
			break;
		default:
			return;
		}
		wait_for_completion(&w->chunk_done);
	}
}

static void klog_gen_work_fn(struct work_struct *work)
{
	struct klog_gen_work *w = container_of(work, struct klog_gen_work,
					       on_cpu.work);
	const struct klog_gen_run *run = &klog_gen_args;
	unsigned int seq;
	int ctx;

	if (run->ctx_mask) {
		for (ctx = 0; ctx < KLOG_GEN_NR_CTX; ctx++)
			if (run->ctx_mask & BIT(ctx))
				klog_gen_run_ctx(w, ctx);
		return;
	}

	for (seq = 0; seq < run->count; seq++) {
		if (klog_printk("klog_gen cpu=%u seq=%u\n", w->on_cpu.cpu,
				seq) <= 0)
			WRITE_ONCE(w->rejected, w->rejected + 1);
		WRITE_ONCE(w->emitted, w->emitted + 1);
		cond_resched();
	}
}

/* "N" or "N CONTEXT": the count and the mask of contexts (0: untagged). */
static int klog_gen_parse(char *line, unsigned int *n, unsigned int *mask)
{
	char *ctx = strim(line);
	char *count = strsep(&ctx, " ");
	int i, ret;

	ret = kstrtouint(count, 10, n);
	if (ret)
		return ret;
	*mask = 0;
	if (!ctx)
		return 0;
	ctx = skip_spaces(ctx);
	if (!strcmp(ctx, "all")) {
		*mask = BIT(KLOG_GEN_NR_CTX) - 1;
		return 0;
	}
	i = match_string(klog_gen_ctx_names, KLOG_GEN_NR_CTX, ctx);
	if (i < 0)
		return -EINVAL;
	*mask = BIT(i);
	return 0;
}

static ssize_t klog_gen_run_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct klog_gen_run run;
	char kbuf[32];
	int ret;

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	ret = klog_gen_parse(kbuf, &run.count, &run.ctx_mask);
	if (ret)
		return ret;

	mutex_lock(&klog_gen_mutex);
	klog_gen_args = run;
	relay_sample_run_on_cpus(&klog_gen_works.on_cpu);
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
	struct klog_gen_work *w;
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&klog_gen_works, cpu);
		INIT_WORK(&w->on_cpu.work, klog_gen_work_fn);
		timer_setup(&w->timer, klog_gen_timer_fn, 0);
		w->irq_work = IRQ_WORK_INIT_HARD(klog_gen_irq_work_fn);
		init_completion(&w->chunk_done);
	}

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
	struct klog_gen_work *w;
	unsigned int cpu;

	/* Waits for a run in progress. */
	debugfs_remove_recursive(klog_gen_dir);
	/* Callbacks may still be returning after their last complete(). */
	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&klog_gen_works, cpu);
		timer_delete_sync(&w->timer);
		irq_work_sync(&w->irq_work);
	}
}
module_exit(klog_gen_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klog load generator");
