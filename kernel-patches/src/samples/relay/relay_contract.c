// SPDX-License-Identifier: GPL-2.0
/*
 * relay_contract - a relay client doing what relay.rst allows, for tests
 * of relay readers and of relay itself
 *
 * Talks to relay directly (relay_open(), relay_write(), relay_flush(),
 * relay_close()), one channel per load, shaped by module parameters:
 *
 *   subbuf_size, n_subbufs  geometry (any sub-buffer size, not only pages)
 *   global     1: one buffer cpu0, written from every CPU under a spinlock
 *   overwrite  1: subbuf_start() always returns 1 (flight recorder);
 *              0: it returns 0 once relay_buf_full()
 *   header     1: subbuf_start() stores the previous sub-buffer's padding
 *              in an unsigned int at its start and reserves that word in
 *              the new one, as relay.rst's example does
 *   proxy      1: buffer files from debugfs_create_file() (debugfs' full
 *              proxy: no mmap); 0: from debugfs_create_file_unsafe()
 *   flush_cb   1: give relay a flush_buf() callback, for RELAY_IOC_FLUSH
 *
 * Files in /sys/kernel/debug/relay_contract/, besides the buffers cpuN:
 *
 *   write    "N [SIZE]": every online CPU writes N records of SIZE bytes
 *            (default 32) from a work item bound to it; returns when done
 *   toobig   N: every CPU tries N records larger than a sub-buffer, which
 *            relay drops
 *   freeze   1: subbuf_start() refuses every switch from now on, in both
 *            modes (a flight recorder stopped by a trigger); 0: it stops
 *   flush    1: relay_flush()
 *   close    1: relay_close(), without relay_flush() first
 *   reopen   1: relay_open() again with the same parameters
 *   written  "cpu=C written=N dropped_toobig=M dropped_full=K" per CPU
 *
 * A record is a u32 CPU, a u32 size and a u64 sequence number, native byte
 * order, followed by size - 16 bytes each equal to the sequence number's
 * low byte.  Sequence numbers count from 0 per CPU over the module's life;
 * "written" is how many were handed out, "dropped_full" how many of those
 * relay refused (full or frozen: relay left the buffer's offset past the
 * end), "dropped_toobig" the too-big records, which take no number.
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/relay.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/sprintf.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "relay_sample.h"

static ulong subbuf_size = 4096;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 4096)");

static ulong n_subbufs = 4;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per buffer (default 4)");

static bool global;
module_param(global, bool, 0444);
MODULE_PARM_DESC(global, "One buffer for all CPUs (default 0)");

static bool overwrite;
module_param(overwrite, bool, 0444);
MODULE_PARM_DESC(overwrite, "Overwrite unconsumed sub-buffers (default 0)");

static bool header;
module_param(header, bool, 0444);
MODULE_PARM_DESC(header, "Padding word at the start of every sub-buffer (default 0)");

static bool proxy;
module_param(proxy, bool, 0444);
MODULE_PARM_DESC(proxy, "Buffer files behind debugfs' full proxy (default 0)");

static bool flush_cb;
module_param(flush_cb, bool, 0444);
MODULE_PARM_DESC(flush_cb, "Give relay a flush_buf() callback (default 0)");

#define CONTRACT_MAX_SUBBUF	SZ_1M
#define CONTRACT_HDR		(header ? sizeof(unsigned int) : 0)

struct contract_rec {
	u32 cpu;
	u32 size;
	u64 seq;
};

struct contract_cpu {
	struct relay_sample_work on_cpu;
	u64 seq;		/* records handed out: the next number */
	u64 dropped_full;
	u64 dropped_toobig;
};

enum contract_ctl {
	CONTRACT_WRITE,
	CONTRACT_TOOBIG,
	CONTRACT_FREEZE,
	CONTRACT_FLUSH,
	CONTRACT_CLOSE,
	CONTRACT_REOPEN,
};

/* What every CPU writes in a run. */
struct contract_run_args {
	u32 n;			/* records to write */
	u32 size;		/* their size */
	bool toobig;		/* records larger than a sub-buffer */
};

static DEFINE_PER_CPU(struct contract_cpu, contract_cpus);
static struct contract_run_args contract_args;
static DEFINE_MUTEX(contract_lock);	/* control files, channel lifetime */
static DEFINE_SPINLOCK(contract_wlock);	/* writers of a global buffer */
static struct rchan *contract_chan;
static struct dentry *contract_dir;
static bool contract_frozen;
static bool contract_dying;		/* module exit has begun */

#ifdef RELAY_SUBBUF_START_PREV_PADDING
static int contract_subbuf_start(struct rchan_buf *buf, void *subbuf,
				 void *prev_subbuf, size_t prev_padding)
{
#else
static int contract_subbuf_start(struct rchan_buf *buf, void *subbuf,
				 void *prev_subbuf)
{
	/* relay counted the previous sub-buffer produced before calling. */
	size_t prev_padding =
		buf->padding[(buf->subbufs_produced - 1) % buf->chan->n_subbufs];
#endif
	if (prev_subbuf && header)
		*(unsigned int *)prev_subbuf = prev_padding;
	if (READ_ONCE(contract_frozen))
		return 0;
	if (!overwrite && relay_buf_full(buf))
		return 0;
	if (header)
		subbuf_start_reserve(buf, sizeof(unsigned int));
	return 1;
}

static struct dentry *contract_create_buf_file(const char *filename,
					       struct dentry *parent,
					       umode_t mode,
					       struct rchan_buf *buf,
					       int *is_global)
{
	*is_global = global;
	if (proxy)
		return debugfs_create_file(filename, mode, parent, buf,
					   &relay_file_operations);
	return debugfs_create_file_unsafe(filename, mode, parent, buf,
					  &relay_file_operations);
}

static int contract_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

#ifdef RELAY_HAS_USER_ABI
/* RELAY_IOC_FLUSH on the global buffer: excludes its writers. */
static void contract_flush_global(struct rchan_buf *buf)
{
	unsigned long flags;

	spin_lock_irqsave(&contract_wlock, flags);
	relay_flush_buf(buf);
	spin_unlock_irqrestore(&contract_wlock, flags);
}
#endif

/* flush_buf and overwrite are set at module init. */
static struct rchan_callbacks contract_callbacks = {
	.subbuf_start		= contract_subbuf_start,
	.create_buf_file	= contract_create_buf_file,
	.remove_buf_file	= contract_remove_buf_file,
};

/* Writes one record; false if relay refused it (full or frozen). */
static bool contract_write_rec(const void *rec, size_t len)
{
	struct rchan_buf *buf;
	unsigned long flags;
	bool stored;

	if (global)
		spin_lock_irqsave(&contract_wlock, flags);
	else
		local_irq_save(flags);
	buf = *this_cpu_ptr(contract_chan->buf);
	relay_write(contract_chan, rec, len);
	/* A refused switch leaves the offset at subbuf_size + 1. */
	stored = buf->offset <= contract_chan->subbuf_size;
	if (global)
		spin_unlock_irqrestore(&contract_wlock, flags);
	else
		local_irq_restore(flags);
	return stored;
}

static void contract_work_fn(struct work_struct *work)
{
	struct contract_cpu *c = container_of(work, struct contract_cpu,
					      on_cpu.work);
	const struct contract_run_args *run = &contract_args;
	struct contract_rec *rec;
	u32 i;

	rec = kvmalloc(run->size, GFP_KERNEL);
	if (!rec)
		return;
	for (i = 0; i < run->n; i++) {
		rec->cpu = c->on_cpu.cpu;
		rec->size = run->size;
		rec->seq = c->seq;
		memset(rec + 1, (u8)c->seq, run->size - sizeof(*rec));
		if (run->toobig) {
			/* Dropped by relay; takes no sequence number. */
			contract_write_rec(rec, run->size);
			c->dropped_toobig++;
		} else {
			if (!contract_write_rec(rec, run->size))
				c->dropped_full++;
			c->seq++;
		}
		cond_resched();
	}
	kvfree(rec);
}

/* Every online CPU writes @n records of @size bytes; contract_lock held. */
static void contract_run(u32 n, u32 size, bool toobig)
{
	contract_args = (struct contract_run_args){
		.n = n, .size = size, .toobig = toobig,
	};
	relay_sample_run_on_cpus(&contract_cpus.on_cpu);
}

static int contract_open_chan(void)
{
	contract_chan = relay_open("cpu", contract_dir, subbuf_size, n_subbufs,
				   &contract_callbacks, NULL);
	return contract_chan ? 0 : -ENOMEM;
}

static int contract_ctl(enum contract_ctl id, u32 val, u32 size)
{
	unsigned long flags;

	if (contract_dying)
		return -ENODEV;
	if (id == CONTRACT_FREEZE) {
		WRITE_ONCE(contract_frozen, val);
		return 0;
	}
	if (id == CONTRACT_REOPEN)
		return contract_chan ? -EBUSY : contract_open_chan();
	if (!contract_chan)
		return -ENODEV;

	switch (id) {
	case CONTRACT_WRITE:
		contract_run(val, size, false);
		break;
	case CONTRACT_TOOBIG:
		contract_run(val, subbuf_size + sizeof(struct contract_rec),
			     true);
		break;
	case CONTRACT_FLUSH:
		/*
		 * The lock excludes RELAY_IOC_FLUSH; relay_flush() does not
		 * sleep for a global buffer.
		 */
		if (global) {
			spin_lock_irqsave(&contract_wlock, flags);
			relay_flush(contract_chan);
			spin_unlock_irqrestore(&contract_wlock, flags);
		} else {
			relay_flush(contract_chan);
		}
		break;
	case CONTRACT_CLOSE:
		relay_close(contract_chan);
		contract_chan = NULL;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

static ssize_t contract_ctl_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	enum contract_ctl id = (uintptr_t)file->private_data;
	u32 val, size = 32;
	char kbuf[32];
	int ret;

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	if (sscanf(kbuf, "%u %u", &val, &size) < 1)
		return -EINVAL;
	if (id == CONTRACT_WRITE &&
	    (size < sizeof(struct contract_rec) ||
	     size > subbuf_size - CONTRACT_HDR))
		return -EINVAL;
	if (id != CONTRACT_WRITE && id != CONTRACT_TOOBIG && val > 1)
		return -EINVAL;
	if (id >= CONTRACT_FLUSH && !val)
		return count;

	mutex_lock(&contract_lock);
	ret = contract_ctl(id, val, size);
	mutex_unlock(&contract_lock);
	return ret ? ret : count;
}

static const struct file_operations contract_ctl_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.write	= contract_ctl_write,
	.llseek	= noop_llseek,
};

static int contract_written_show(struct seq_file *m, void *v)
{
	struct contract_cpu *c;
	unsigned int cpu;

	mutex_lock(&contract_lock);
	for_each_online_cpu(cpu) {
		c = per_cpu_ptr(&contract_cpus, cpu);
		seq_printf(m, "cpu=%u written=%llu dropped_toobig=%llu dropped_full=%llu\n",
			   cpu, c->seq, c->dropped_toobig, c->dropped_full);
	}
	mutex_unlock(&contract_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(contract_written);

static const char * const contract_ctl_names[] = {
	[CONTRACT_WRITE]	= "write",
	[CONTRACT_TOOBIG]	= "toobig",
	[CONTRACT_FREEZE]	= "freeze",
	[CONTRACT_FLUSH]	= "flush",
	[CONTRACT_CLOSE]	= "close",
	[CONTRACT_REOPEN]	= "reopen",
};

static int __init relay_contract_init(void)
{
	unsigned int cpu;
	int i, ret;

	if (subbuf_size < 2 * sizeof(struct contract_rec) ||
	    subbuf_size > CONTRACT_MAX_SUBBUF || n_subbufs < 2 ||
	    n_subbufs > U32_MAX / subbuf_size)
		return -EINVAL;
#ifdef RELAY_HAS_USER_ABI
	if (flush_cb)
		contract_callbacks.flush_buf = global ? contract_flush_global :
							relay_flush_buf_on_cpu;
	contract_callbacks.overwrite = overwrite;
#endif
	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&contract_cpus, cpu)->on_cpu.work,
			  contract_work_fn);

	contract_dir = debugfs_create_dir("relay_contract", NULL);
	if (IS_ERR(contract_dir))
		return PTR_ERR(contract_dir);
	ret = contract_open_chan();
	if (ret) {
		debugfs_remove_recursive(contract_dir);
		return ret;
	}
	for (i = 0; i < ARRAY_SIZE(contract_ctl_names); i++)
		debugfs_create_file(contract_ctl_names[i], 0200, contract_dir,
				    (void *)(uintptr_t)i, &contract_ctl_fops);
	debugfs_create_file("written", 0400, contract_dir, NULL,
			    &contract_written_fops);
	return 0;
}
module_init(relay_contract_init);

static void __exit relay_contract_exit(void)
{
	/* Control handlers that come after this find no channel. */
	mutex_lock(&contract_lock);
	contract_dying = true;
	relay_close(contract_chan);
	contract_chan = NULL;
	mutex_unlock(&contract_lock);
	/* Waits for control handlers in progress. */
	debugfs_remove_recursive(contract_dir);
}
module_exit(relay_contract_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay client behaviours that relay.rst allows, for reader tests");
