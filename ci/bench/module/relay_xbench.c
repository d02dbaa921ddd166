// SPDX-License-Identifier: GPL-2.0
/*
 * relay_xbench - one producer for relay and the BPF ring and perf buffers
 *
 * Every online CPU writes numbered records of the same size from a work
 * item bound to it, through one transport per run:
 *   relay  relay_app_write() into the relay_app channel in
 *          /sys/kernel/debug/relay_xbench/ (buffers cpu0 .. cpuN-1), which
 *          relay-reader reads
 *   tp     the tracepoint relay_xbench_record(data, len), to which a BPF
 *          program attaches (raw_tp) and copies the record into a BPF ring
 *          buffer or perf buffer
 *   none   nothing: the loop alone, for its own cost
 *
 * Writing "TRANSPORT SIZE RATE MSECS [COUNT]" to
 * /sys/kernel/debug/relay_xbench_ctl/run makes every online CPU write
 * records of SIZE bytes (8 to 256, a multiple of 8) for MSECS ms, or until
 * it wrote COUNT records (0 or none: no limit), at RATE records per second
 * per CPU (0: as fast as it can; see xbench_pace() for how it keeps
 * the rate); the write returns when all CPUs are done.
 * /sys/kernel/debug/relay_xbench_ctl/results then holds the last run's
 * totals over all CPUs, one "NAME VALUE" per line:
 *   records   records offered to the transport
 *   dropped   records relay_app_write() refused (relay only: the BPF
 *             programs count their own failures)
 *   ns        the CPUs' time in the loop, added up
 *   cpus      CPUs that wrote
 *
 * A record's first 8 bytes are its id, CPU << 48 | sequence number (from
 * 0 in every run, per CPU), in native byte order; the rest is the byte
 * pattern 0, 1, 2, ... of its offset, the same in every record.
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "relay_app.h"

#define CREATE_TRACE_POINTS
#include "relay_xbench_trace.h"

static ulong subbuf_size = 262144;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size of the relay channel (default 262144)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU of the relay channel (default 8)");

#define XBENCH_MIN_RECORD	8
#define XBENCH_MAX_RECORD	256
#define XBENCH_CPU_SHIFT	48
/* The longest command "run" takes. */
#define XBENCH_MAX_COMMAND	64
/* The clock, the deadline and the pace are checked every this many records. */
#define XBENCH_CHECK_EVERY	64

enum xbench_transport {
	XBENCH_NONE,
	XBENCH_RELAY,
	XBENCH_TP,
};

struct xbench_work {
	struct work_struct work;
	unsigned int cpu;
	enum xbench_transport transport;
	u32 size;
	u32 rate;	/* records per second, 0 for full speed */
	u64 msecs;
	u64 count;	/* 0 for no limit */
	u64 records;
	u64 dropped;
	u64 ns;
	u64 rec[XBENCH_MAX_RECORD / sizeof(u64)];
};

static DEFINE_PER_CPU(struct xbench_work, xbench_works);
static DEFINE_MUTEX(xbench_mutex);	/* one run at a time */
static struct relay_app *xbench_app;
static struct dentry *xbench_dir;
static unsigned int xbench_cpus;

/* The "none" transport: a call the compiler can neither inline nor drop. */
static noinline void xbench_nothing(const void *data, u32 len)
{
	barrier();
}

static uint pace_sleep_us = 200;
module_param(pace_sleep_us, uint, 0644);
MODULE_PARM_DESC(pace_sleep_us, "Paced: sleep at least this long, this much slack (default 200)");

static uint pace_debt_us = 2000;
module_param(pace_debt_us, uint, 0644);
MODULE_PARM_DESC(pace_debt_us, "Paced: records owed for longer are not written (default 2000)");

/*
 * Keeps record @n at or after its time at @rate records per second,
 * counted from *@paced: ahead of it, sleep until then (pace_sleep_us at
 * least, with that much slack); a CPU
 * that fell behind (a sleep that overslept, a preempted worker) writes the
 * records it owes at full speed, up to pace_debt_us worth of them, and
 * moves its schedule for the rest, so that no burst fills the buffers
 * after a stall.  The achieved rate is what the caller reports (records
 * over time).
 */
static void xbench_pace(u32 rate, u64 n, u64 now, u64 *paced)
{
	u64 due = *paced + div_u64(n * NSEC_PER_SEC, rate);
	u64 debt = (u64)pace_debt_us * NSEC_PER_USEC;
	unsigned long us;

	if (now < due) {
		us = max_t(unsigned long, div_u64(due - now, NSEC_PER_USEC),
			   pace_sleep_us);
		usleep_range(us, us + pace_sleep_us);
	} else if (now > due + debt) {
		*paced += now - due - debt;
	}
}

static void xbench_work_fn(struct work_struct *work)
{
	struct xbench_work *w = container_of(work, struct xbench_work, work);
	u64 id = (u64)w->cpu << XBENCH_CPU_SHIFT;
	u64 start, end, now, n, paced;
	u8 *bytes = (u8 *)w->rec;
	u32 i;

	for (i = sizeof(u64); i < w->size; i++)
		bytes[i] = i;
	w->records = 0;
	w->dropped = 0;
	start = ktime_get_ns();
	end = start + w->msecs * NSEC_PER_MSEC;
	paced = start;
	for (n = 0; !w->count || n < w->count; n++) {
		if (!(n % XBENCH_CHECK_EVERY)) {
			now = ktime_get_ns();
			if (now >= end)
				break;
			if (w->rate)
				xbench_pace(w->rate, n, now, &paced);
		}
		w->rec[0] = id | n;
		switch (w->transport) {
		case XBENCH_RELAY:
			if (relay_app_write(xbench_app, w->rec, w->size))
				w->dropped++;
			break;
		case XBENCH_TP:
			trace_relay_xbench_record(w->rec, w->size);
			break;
		default:
			xbench_nothing(w->rec, w->size);
			break;
		}
		cond_resched();
	}
	w->ns = ktime_get_ns() - start;
	w->records = n;
}

static int xbench_parse(char *kbuf, enum xbench_transport *transport,
			u32 *size, u32 *rate, u64 *msecs, u64 *count)
{
	char name[8];

	*count = 0;
	if (sscanf(kbuf, "%7s %u %u %llu %llu", name, size, rate, msecs,
		   count) < 4)
		return -EINVAL;
	if (!strcmp(name, "relay"))
		*transport = XBENCH_RELAY;
	else if (!strcmp(name, "tp"))
		*transport = XBENCH_TP;
	else if (!strcmp(name, "none"))
		*transport = XBENCH_NONE;
	else
		return -EINVAL;
	if (*size < XBENCH_MIN_RECORD || *size > XBENCH_MAX_RECORD ||
	    *size % sizeof(u64) || !*msecs)
		return -EINVAL;
	return 0;
}

static ssize_t xbench_run_write(struct file *file, const char __user *ubuf,
				size_t count, loff_t *ppos)
{
	enum xbench_transport transport;
	struct xbench_work *w;
	u64 msecs, max_count;
	unsigned int cpu;
	u32 size, rate;
	char *kbuf;
	int ret;

	if (count > XBENCH_MAX_COMMAND)
		return -EINVAL;
	kbuf = memdup_user_nul(ubuf, count);
	if (IS_ERR(kbuf))
		return PTR_ERR(kbuf);
	ret = xbench_parse(kbuf, &transport, &size, &rate, &msecs, &max_count);
	kfree(kbuf);
	if (ret)
		return ret;

	mutex_lock(&xbench_mutex);
	cpus_read_lock();
	xbench_cpus = 0;
	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&xbench_works, cpu);
		w->records = 0;
		w->dropped = 0;
		w->ns = 0;
	}
	for_each_online_cpu(cpu) {
		w = per_cpu_ptr(&xbench_works, cpu);
		w->cpu = cpu;
		w->transport = transport;
		w->size = size;
		w->rate = rate;
		w->msecs = msecs;
		w->count = max_count;
		schedule_work_on(cpu, &w->work);
		xbench_cpus++;
	}
	for_each_online_cpu(cpu)
		flush_work(&per_cpu_ptr(&xbench_works, cpu)->work);
	cpus_read_unlock();
	mutex_unlock(&xbench_mutex);

	return count;
}

static const struct file_operations xbench_run_fops = {
	.owner	= THIS_MODULE,
	.write	= xbench_run_write,
	.llseek	= noop_llseek,
};

static int xbench_results_show(struct seq_file *m, void *v)
{
	u64 records = 0, dropped = 0, ns = 0;
	struct xbench_work *w;
	unsigned int cpu;

	mutex_lock(&xbench_mutex);
	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&xbench_works, cpu);
		records += w->records;
		dropped += w->dropped;
		ns += w->ns;
	}
	seq_printf(m, "records %llu\ndropped %llu\nns %llu\ncpus %u\n",
		   records, dropped, ns, xbench_cpus);
	mutex_unlock(&xbench_mutex);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(xbench_results);

static int __init xbench_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
	};
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&xbench_works, cpu)->work,
			  xbench_work_fn);

	xbench_app = relay_app_create("relay_xbench", NULL, &params);
	if (IS_ERR(xbench_app))
		return PTR_ERR(xbench_app);

	xbench_dir = debugfs_create_dir("relay_xbench_ctl", NULL);
	debugfs_create_file("run", 0200, xbench_dir, NULL, &xbench_run_fops);
	debugfs_create_file("results", 0444, xbench_dir, NULL,
			    &xbench_results_fops);
	return 0;
}
module_init(xbench_init);

static void __exit xbench_exit(void)
{
	/* Waits for a run in progress, so no write follows the destroy. */
	debugfs_remove_recursive(xbench_dir);
	relay_app_destroy(xbench_app);
}
module_exit(xbench_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("one producer for relay, the BPF ring buffer and the perf buffer");
