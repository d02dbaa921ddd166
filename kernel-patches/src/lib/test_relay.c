// SPDX-License-Identifier: GPL-2.0
/*
 * test_relay - a relay client for tools/testing/selftests/relay/
 *
 * Opens a relay channel whose buffer files are debugfs test_relay/cpuN
 * (test_relay/cpu0 alone for a global buffer), created with
 * relay_debugfs_create_file() so that readers can map them.  Writing a
 * count N to test_relay/emit makes every online CPU write N records
 * with relay_write(), each a struct test_relay_record numbered per buffer
 * from 0 (a number is used up even when the full buffer drops the write,
 * so a reader sees gaps exactly where records were lost).
 *
 * Module parameters choose what relay.rst leaves to a client:
 *   subbuf_size, n_subbufs  the geometry: any size, not only whole pages
 *   overwrite               subbuf_start() always switches (flight
 *                           recorder) instead of refusing when full
 *   header                  subbuf_start() reserves a header word in each
 *                           sub-buffer and stores the previous
 *                           sub-buffer's padding in it, as relay.rst shows
 *   global                  one buffer for every CPU, its writers
 *                           serialised by a spinlock
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/kstrtox.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/relay.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#define TEST_RELAY_MAGIC	0x52544c52	/* "RLTR" in memory */
#define TEST_RELAY_MAX_EMIT	1000000		/* records per CPU and write */

/* What user space finds in the sub-buffers, after the header if any. */
struct test_relay_record {
	u32 magic;		/* TEST_RELAY_MAGIC */
	u32 cpu;		/* the writer's CPU */
	u64 seq;		/* per buffer, from 0 */
};

static ulong subbuf_size = 4096;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "sub-buffer size in bytes");
static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "sub-buffers per buffer");
static bool overwrite;
module_param(overwrite, bool, 0444);
MODULE_PARM_DESC(overwrite, "overwrite unconsumed sub-buffers when full");
static bool header;
module_param(header, bool, 0444);
MODULE_PARM_DESC(header, "store each sub-buffer's padding in a header word");
static bool global;
module_param(global, bool, 0444);
MODULE_PARM_DESC(global, "one buffer for every CPU");

static struct rchan *test_relay_chan;
static struct dentry *test_relay_dir;
static DEFINE_MUTEX(test_relay_emit_mutex);	/* one emit at a time */
static DEFINE_SPINLOCK(test_relay_lock);	/* writers of a global buffer */
static DEFINE_PER_CPU(u64, test_relay_seq);	/* per-cpu buffers */
static u64 test_relay_global_seq;		/* under test_relay_lock */
/* Per buffer: the produced count when subbuf_start() last wrote a header. */
static DEFINE_PER_CPU(size_t, test_relay_headed);

#ifdef RELAY_SUBBUF_START_PREV_PADDING
static int test_relay_subbuf_start(struct rchan_buf *buf, void *subbuf,
				   void *prev_subbuf, size_t prev_padding)
{
#else
static int test_relay_subbuf_start(struct rchan_buf *buf, void *subbuf,
				   void *prev_subbuf)
{
	/* relay counted the previous sub-buffer produced before the call. */
	size_t prev_padding =
		buf->padding[(buf->subbufs_produced - 1) % buf->chan->n_subbufs];
#endif
	size_t *headed = per_cpu_ptr(&test_relay_headed, buf->cpu);

	/*
	 * Once per sub-buffer: after a refusal relay calls again with the
	 * same previous sub-buffer, which readers may be reading by then.
	 */
	if (header && prev_subbuf && *headed != buf->subbufs_produced) {
		*(u32 *)prev_subbuf = prev_padding;
		*headed = buf->subbufs_produced;
	}
	if (!overwrite && relay_buf_full(buf))
		return 0;
	if (header)
		subbuf_start_reserve(buf, sizeof(u32));
	return 1;
}

static struct dentry *test_relay_create_buf_file(const char *filename,
						 struct dentry *parent,
						 umode_t mode,
						 struct rchan_buf *buf,
						 int *is_global)
{
	*is_global = global;
	return relay_debugfs_create_file(filename, mode, parent, buf);
}

static int test_relay_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

/* RELAY_IOC_FLUSH on the global buffer: excludes its writers. */
static void test_relay_flush_global(struct rchan_buf *buf)
{
	unsigned long flags;

	spin_lock_irqsave(&test_relay_lock, flags);
	relay_flush_buf(buf);
	spin_unlock_irqrestore(&test_relay_lock, flags);
}

/* overwrite and flush_buf are set from the parameters at module init. */
static struct rchan_callbacks test_relay_callbacks = {
	.subbuf_start		= test_relay_subbuf_start,
	.create_buf_file	= test_relay_create_buf_file,
	.remove_buf_file	= test_relay_remove_buf_file,
};

/* Runs on one CPU (work_on_cpu()): writes *arg records. */
static long test_relay_emit_on_cpu(void *arg)
{
	unsigned long count = *(unsigned long *)arg, i;
	struct test_relay_record rec = { .magic = TEST_RELAY_MAGIC };
	unsigned long flags;

	for (i = 0; i < count; i++) {
		if (global) {
			spin_lock_irqsave(&test_relay_lock, flags);
			rec.cpu = smp_processor_id();
			rec.seq = test_relay_global_seq++;
			relay_write(test_relay_chan, &rec, sizeof(rec));
			spin_unlock_irqrestore(&test_relay_lock, flags);
		} else {
			/* This CPU's buffer has no other writer. */
			local_irq_save(flags);
			rec.cpu = smp_processor_id();
			rec.seq = __this_cpu_inc_return(test_relay_seq) - 1;
			relay_write(test_relay_chan, &rec, sizeof(rec));
			local_irq_restore(flags);
		}
		if (!(i % 1024))
			cond_resched();
	}
	return 0;
}

static ssize_t test_relay_emit_write(struct file *file,
				     const char __user *ubuf,
				     size_t len, loff_t *ppos)
{
	unsigned long count;
	unsigned int cpu;
	int ret;

	ret = kstrtoul_from_user(ubuf, len, 0, &count);
	if (ret)
		return ret;
	/* Bounded: CPU hotplug waits for an emit in progress. */
	if (count > TEST_RELAY_MAX_EMIT)
		return -EINVAL;

	mutex_lock(&test_relay_emit_mutex);
	cpus_read_lock();
	for_each_online_cpu(cpu)
		work_on_cpu(cpu, test_relay_emit_on_cpu, &count);
	cpus_read_unlock();
	mutex_unlock(&test_relay_emit_mutex);
	return len;
}

static const struct file_operations test_relay_emit_fops = {
	.owner	= THIS_MODULE,
	.write	= test_relay_emit_write,
};

static int __init test_relay_init(void)
{
	/* Room for a record after the header: subbuf_start_reserve() needs it. */
	if (!n_subbufs ||
	    subbuf_size < (header ? sizeof(u32) : 0) +
			  sizeof(struct test_relay_record))
		return -EINVAL;

	test_relay_callbacks.overwrite = overwrite;
	test_relay_callbacks.flush_buf = global ? test_relay_flush_global :
						  relay_flush_buf_on_cpu;

	test_relay_dir = debugfs_create_dir("test_relay", NULL);
	if (IS_ERR(test_relay_dir))
		return PTR_ERR(test_relay_dir);

	test_relay_chan = relay_open("cpu", test_relay_dir, subbuf_size,
				     n_subbufs, &test_relay_callbacks, NULL);
	if (!test_relay_chan) {
		debugfs_remove_recursive(test_relay_dir);
		return -ENOMEM;
	}
	debugfs_create_file("emit", 0200, test_relay_dir, NULL,
			    &test_relay_emit_fops);
	return 0;
}

static void __exit test_relay_exit(void)
{
	/* No emit runs: an open control file holds the module. */
	debugfs_lookup_and_remove("emit", test_relay_dir);
	/* Readers that hold a buffer file keep the buffer, finalized. */
	relay_close(test_relay_chan);
	debugfs_remove_recursive(test_relay_dir);
}

module_init(test_relay_init);
module_exit(test_relay_exit);

MODULE_DESCRIPTION("relay client for the relay selftests");
MODULE_LICENSE("GPL");
