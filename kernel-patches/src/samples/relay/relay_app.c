// SPDX-License-Identifier: GPL-2.0
/*
 * relay_app - a relay channel with relay-apps control files and the
 * <uapi/linux/relay.h> ioctls on its buffer files
 *
 * A relay_app owns a debugfs directory holding the channel's buffer files
 * cpu0 .. cpuN-1 (a global channel has cpu0 only) and the control files of
 * the relay-apps mmap protocol:
 *
 *   subbuf_size, n_subbufs, overwrite  geometry and mode of the next channel
 *   create       1: (re)create the channel, 0: destroy it; reads 0 or 1
 *   enabled      writes are ignored while 0; writing 0 waits for writes in
 *                progress, then flushes every buffer
 *   dropped      writes dropped because a buffer was full or a write was
 *                larger than a sub-buffer
 *   cpuN.produced  binary size_t: sub-buffers produced
 *   cpuN.consumed  binary size_t; a write adds the size_t it carries (a
 *                  delta) to the sub-buffers consumed
 *
 * Every sub-buffer starts with an unsigned int holding the number of
 * padding bytes at its end, written when the writer leaves it; its data
 * follows and is subbuf_size - 4 - padding bytes long.
 *
 * The buffer files use relay_file_operations (open, read, poll, mmap,
 * release) plus an ioctl handler implementing <uapi/linux/relay.h>.
 * They are created with debugfs_create_file_unsafe(): debugfs' full proxy
 * does not forward mmap, and relay's file operations keep the buffer
 * alive by reference counting, so the open proxy is sufficient.
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/relay.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <uapi/linux/relay.h>

#include "relay_app.h"

/* Client header at the start of every sub-buffer: its padding. */
#define RELAY_APP_HDR_SIZE		sizeof(unsigned int)

/* First published sizes of the ioctl structures. */
#define RELAY_BUF_INFO_SIZE_VER0	32
#define RELAY_BUF_STATE_SIZE_VER0	56
#define RELAY_SUBBUF_SIZE_VER0		32
#define RELAY_CONSUME_SIZE_VER0		32

static_assert(sizeof(struct relay_buf_info) >= RELAY_BUF_INFO_SIZE_VER0);
static_assert(sizeof(struct relay_buf_state) >= RELAY_BUF_STATE_SIZE_VER0);
static_assert(sizeof(struct relay_subbuf) >= RELAY_SUBBUF_SIZE_VER0);
static_assert(sizeof(struct relay_consume) >= RELAY_CONSUME_SIZE_VER0);

/*
 * Loss counters of one buffer.  Only the buffer's writer changes them:
 * with interrupts disabled on the buffer's CPU, or under the channel lock
 * for a global buffer.
 */
struct relay_app_stats {
	u64 lost_full;
	u64 lost_toobig;
	u64 lost_overwritten;
};

/*
 * One relay channel.  Referenced by its relay_app while current and by
 * every open buffer file, so that the ioctl handler can use it after the
 * channel was destroyed.
 */
struct relay_app_chan {
	struct kref kref;
	struct rchan *rchan;
	bool overwrite;
	bool global;
	spinlock_t lock;		/* serialises writers of a global buffer */
	struct mutex flush_lock;	/* serialises FLUSH with closing */
	bool closed;
	struct relay_app_stats __percpu *stats;
};

enum relay_app_ctl_id {
	RELAY_APP_CTL_SUBBUF_SIZE,
	RELAY_APP_CTL_N_SUBBUFS,
	RELAY_APP_CTL_OVERWRITE,
	RELAY_APP_CTL_CREATE,
	RELAY_APP_CTL_ENABLED,
	RELAY_APP_CTL_DROPPED,
	RELAY_APP_NR_CTL,
};

static const struct {
	const char *name;
	umode_t mode;
} relay_app_ctl_files[RELAY_APP_NR_CTL] = {
	[RELAY_APP_CTL_SUBBUF_SIZE]	= { "subbuf_size", 0600 },
	[RELAY_APP_CTL_N_SUBBUFS]	= { "n_subbufs", 0600 },
	[RELAY_APP_CTL_OVERWRITE]	= { "overwrite", 0600 },
	[RELAY_APP_CTL_CREATE]		= { "create", 0600 },
	[RELAY_APP_CTL_ENABLED]		= { "enabled", 0600 },
	[RELAY_APP_CTL_DROPPED]		= { "dropped", 0400 },
};

struct relay_app_ctl {
	struct relay_app *app;
	enum relay_app_ctl_id id;
};

struct relay_app_cpu_ctl {
	struct relay_app *app;
	unsigned int cpu;
};

/**
 * struct relay_app - a relay channel with its control files
 * @dir: debugfs directory of the buffer and control files
 * @chan: the current channel, NULL while there is none
 * @enabled: relay_app_write() stores data only while set
 * @lock: serialises control file handlers and channel (re)creation
 * @params: geometry and mode of the next channel
 * @dying: relay_app_destroy() has started; no new channel may be created
 * @ctl: private data of the text control files
 * @cpu_ctl: private data of the cpuN.produced and cpuN.consumed files
 */
struct relay_app {
	struct dentry *dir;
	struct relay_app_chan __rcu *chan;
	bool enabled;
	struct mutex lock;		/* control files, channel (re)creation */
	struct relay_app_params params;
	bool dying;
	struct relay_app_ctl ctl[RELAY_APP_NR_CTL];
	struct relay_app_cpu_ctl *cpu_ctl;
};

/*
 * relay_file_operations plus our open, release and ioctl methods.  Copied
 * at module init rather than spelt out, so that it keeps whatever methods
 * relay provides (.mmap or .mmap_prepare, .splice_read, ...); read-only
 * once initialised.
 */
static struct file_operations relay_app_buf_fops __ro_after_init;

static struct relay_app_stats *
relay_app_buf_stats(struct relay_app_chan *ch, struct rchan_buf *buf)
{
	return per_cpu_ptr(ch->stats, ch->global ? 0 : buf->cpu);
}

static void relay_app_chan_release(struct kref *kref)
{
	struct relay_app_chan *ch = container_of(kref, struct relay_app_chan,
						 kref);

	mutex_destroy(&ch->flush_lock);
	free_percpu(ch->stats);
	kfree(ch);
}

/*
 * Relay callbacks.  subbuf_start runs in the writer's context (see
 * relay_app_write()) or in a flush, both with interrupts disabled and
 * excluding each other.
 */
static int relay_app_subbuf_start(struct rchan_buf *buf, void *subbuf,
				  void *prev_subbuf, size_t prev_padding)
{
	struct relay_app_chan *ch = buf->chan->private_data;
	struct relay_app_stats *st;

	/*
	 * The sub-buffer just finished gets its padding in its header.  When
	 * a full buffer keeps the writer from switching, this rewrites the
	 * same value on every attempt, which is harmless.
	 */
	if (prev_subbuf)
		*(unsigned int *)prev_subbuf = prev_padding;

	if (relay_buf_full(buf)) {
		/* No-overwrite: the caller counts the dropped write. */
		if (!ch->overwrite)
			return 0;
		/* The oldest unconsumed sub-buffer is about to be reused. */
		st = relay_app_buf_stats(ch, buf);
		WRITE_ONCE(st->lost_overwritten, st->lost_overwritten + 1);
	}

	subbuf_start_reserve(buf, RELAY_APP_HDR_SIZE);
	return 1;
}

static struct dentry *relay_app_create_buf_file(const char *filename,
						struct dentry *parent,
						umode_t mode,
						struct rchan_buf *buf,
						int *is_global)
{
	struct relay_app_chan *ch = buf->chan->private_data;

	*is_global = ch->global;
	return debugfs_create_file_unsafe(filename, mode, parent, buf,
					  &relay_app_buf_fops);
}

static int relay_app_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

static const struct rchan_callbacks relay_app_callbacks = {
	.subbuf_start		= relay_app_subbuf_start,
	.create_buf_file	= relay_app_create_buf_file,
	.remove_buf_file	= relay_app_remove_buf_file,
};

/* Write one record; runs with interrupts disabled as the buffer's writer. */
static int relay_app_write_buf(struct relay_app_chan *ch,
			       struct rchan_buf *buf,
			       const void *data, size_t len)
{
	size_t subbuf_size = buf->chan->subbuf_size;
	struct relay_app_stats *st = relay_app_buf_stats(ch, buf);

	if (unlikely(len > subbuf_size - RELAY_APP_HDR_SIZE)) {
		WRITE_ONCE(st->lost_toobig, st->lost_toobig + 1);
		return -EMSGSIZE;
	}
	/* relay_switch_subbuf() returns 0 for a successful empty write. */
	if (unlikely(!len))
		return 0;

	/* With the size checked, a failed switch means a full buffer. */
	if (unlikely(buf->offset + len > subbuf_size) &&
	    !relay_switch_subbuf(buf, len)) {
		WRITE_ONCE(st->lost_full, st->lost_full + 1);
		return -ENOBUFS;
	}

	memcpy(buf->data + buf->offset, data, len);
	WRITE_ONCE(buf->offset, buf->offset + len);
	return 0;
}

/**
 * relay_app_write() - write a record into a relay_app channel
 * @app: the relay_app
 * @data: record bytes
 * @len: record length in bytes
 *
 * Writes into the current CPU's buffer with interrupts disabled, or into
 * the global buffer under an irq-safe spinlock.  A record never straddles
 * sub-buffers.  Callable from any context but NMI, until
 * relay_app_destroy() is called.
 *
 * Return: 0 when the record was stored, -ENODEV when there is no channel,
 * -EAGAIN when the channel is disabled, -ENOBUFS when it was dropped
 * because the buffer is full (no-overwrite mode), -EMSGSIZE when it is
 * larger than a sub-buffer's data area.
 */
int relay_app_write(struct relay_app *app, const void *data, size_t len)
{
	struct relay_app_chan *ch;
	struct rchan_buf *buf;
	unsigned long flags;
	int ret;

	rcu_read_lock();
	ch = rcu_dereference(app->chan);
	if (!ch) {
		ret = -ENODEV;
	} else if (!READ_ONCE(app->enabled)) {
		ret = -EAGAIN;
	} else if (ch->global) {
		spin_lock_irqsave(&ch->lock, flags);
		buf = *per_cpu_ptr(ch->rchan->buf, 0);
		ret = relay_app_write_buf(ch, buf, data, len);
		spin_unlock_irqrestore(&ch->lock, flags);
	} else {
		local_irq_save(flags);
		buf = *this_cpu_ptr(ch->rchan->buf);
		ret = buf ? relay_app_write_buf(ch, buf, data, len) : -ENODEV;
		local_irq_restore(flags);
	}
	rcu_read_unlock();

	return ret;
}
EXPORT_SYMBOL_GPL(relay_app_write);

/*
 * Close the partly filled sub-buffer.  Runs with interrupts disabled on
 * the buffer's CPU, where writers also run with interrupts disabled, or
 * under the lock of a global buffer, so no write is in progress.
 */
static void relay_app_flush_local(void *info)
{
	struct rchan_buf *buf = info;
	size_t offset = buf->offset;

	/* Nothing to do when empty or when a full buffer blocks the writer. */
	if (offset > RELAY_APP_HDR_SIZE && offset <= buf->chan->subbuf_size)
		relay_switch_subbuf(buf, 0);
}

static void relay_app_flush_buf(struct relay_app_chan *ch,
				struct rchan_buf *buf)
{
	unsigned long flags;

	if (ch->global) {
		spin_lock_irqsave(&ch->lock, flags);
		relay_app_flush_local(buf);
		spin_unlock_irqrestore(&ch->lock, flags);
		return;
	}

	cpus_read_lock();
	if (cpu_online(buf->cpu)) {
		smp_call_function_single(buf->cpu, relay_app_flush_local,
					 buf, 1);
	} else {
		/* No writer runs on an offline CPU. */
		local_irq_save(flags);
		relay_app_flush_local(buf);
		local_irq_restore(flags);
	}
	cpus_read_unlock();
}

static void relay_app_flush_all(struct relay_app_chan *ch)
{
	struct rchan_buf *buf;
	unsigned int cpu;

	mutex_lock(&ch->flush_lock);
	for_each_possible_cpu(cpu) {
		buf = READ_ONCE(*per_cpu_ptr(ch->rchan->buf, cpu));
		if (buf)
			relay_app_flush_buf(ch, buf);
		if (ch->global)
			break;
	}
	mutex_unlock(&ch->flush_lock);
}

static int relay_app_check_params(const struct relay_app_params *p)
{
	if (p->subbuf_size <= RELAY_APP_HDR_SIZE + 1 || !p->n_subbufs ||
	    p->subbuf_size > UINT_MAX / p->n_subbufs)
		return -EINVAL;
	return 0;
}

static int relay_app_open_chan(struct relay_app *app)
{
	struct relay_app_chan *ch;
	int ret;

	lockdep_assert_held(&app->lock);

	ret = relay_app_check_params(&app->params);
	if (ret)
		return ret;

	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return -ENOMEM;
	ch->stats = alloc_percpu(struct relay_app_stats);
	if (!ch->stats) {
		kfree(ch);
		return -ENOMEM;
	}
	kref_init(&ch->kref);
	spin_lock_init(&ch->lock);
	mutex_init(&ch->flush_lock);
	ch->overwrite = app->params.overwrite;
	ch->global = app->params.global;

	ch->rchan = relay_open("cpu", app->dir, app->params.subbuf_size,
			       app->params.n_subbufs, &relay_app_callbacks, ch);
	if (!ch->rchan) {
		kref_put(&ch->kref, relay_app_chan_release);
		return -ENOMEM;
	}

	rcu_assign_pointer(app->chan, ch);
	return 0;
}

static void relay_app_close_chan(struct relay_app *app)
{
	struct relay_app_chan *ch;

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (!ch)
		return;

	RCU_INIT_POINTER(app->chan, NULL);
	/* Writers run in RCU read-side critical sections. */
	synchronize_rcu();

	relay_app_flush_all(ch);
	mutex_lock(&ch->flush_lock);
	ch->closed = true;
	mutex_unlock(&ch->flush_lock);

	relay_close(ch->rchan);
	ch->rchan = NULL;
	kref_put(&ch->kref, relay_app_chan_release);
}

static void relay_app_disable(struct relay_app *app)
{
	struct relay_app_chan *ch;

	lockdep_assert_held(&app->lock);

	WRITE_ONCE(app->enabled, false);
	synchronize_rcu();

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (ch)
		relay_app_flush_all(ch);
}

static u64 relay_app_dropped(struct relay_app *app)
{
	struct relay_app_chan *ch;
	struct relay_app_stats *st;
	unsigned int cpu;
	u64 sum = 0;

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (!ch)
		return 0;

	for_each_possible_cpu(cpu) {
		st = per_cpu_ptr(ch->stats, cpu);
		sum += READ_ONCE(st->lost_full) + READ_ONCE(st->lost_toobig);
	}
	return sum;
}

/* Text control files. */

static ssize_t relay_app_ctl_read(struct file *file, char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct relay_app_ctl *ctl = file->private_data;
	struct relay_app *app = ctl->app;
	char tmp[24];
	u64 val = 0;
	int len;

	mutex_lock(&app->lock);
	switch (ctl->id) {
	case RELAY_APP_CTL_SUBBUF_SIZE:
		val = app->params.subbuf_size;
		break;
	case RELAY_APP_CTL_N_SUBBUFS:
		val = app->params.n_subbufs;
		break;
	case RELAY_APP_CTL_OVERWRITE:
		val = app->params.overwrite;
		break;
	case RELAY_APP_CTL_CREATE:
		val = !!rcu_access_pointer(app->chan);
		break;
	case RELAY_APP_CTL_ENABLED:
		val = app->enabled;
		break;
	case RELAY_APP_CTL_DROPPED:
		val = relay_app_dropped(app);
		break;
	default:
		break;
	}
	mutex_unlock(&app->lock);

	len = scnprintf(tmp, sizeof(tmp), "%llu\n", val);
	return simple_read_from_buffer(ubuf, count, ppos, tmp, len);
}

static ssize_t relay_app_ctl_write(struct file *file, const char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	struct relay_app_ctl *ctl = file->private_data;
	struct relay_app *app = ctl->app;
	u64 val;
	int ret;

	ret = kstrtou64_from_user(ubuf, count, 0, &val);
	if (ret)
		return ret;

	mutex_lock(&app->lock);
	if (app->dying) {
		ret = -ENODEV;
		goto out;
	}

	switch (ctl->id) {
	case RELAY_APP_CTL_SUBBUF_SIZE:
		if (val <= RELAY_APP_HDR_SIZE + 1 || val > UINT_MAX)
			ret = -EINVAL;
		else
			app->params.subbuf_size = val;
		break;
	case RELAY_APP_CTL_N_SUBBUFS:
		if (!val || val > UINT_MAX)
			ret = -EINVAL;
		else
			app->params.n_subbufs = val;
		break;
	case RELAY_APP_CTL_OVERWRITE:
		app->params.overwrite = !!val;
		break;
	case RELAY_APP_CTL_CREATE:
		/* Keep the old channel if the new one cannot be valid. */
		if (val)
			ret = relay_app_check_params(&app->params);
		if (ret)
			break;
		relay_app_close_chan(app);
		if (val)
			ret = relay_app_open_chan(app);
		break;
	case RELAY_APP_CTL_ENABLED:
		if (val)
			WRITE_ONCE(app->enabled, true);
		else
			relay_app_disable(app);
		break;
	default:
		ret = -EPERM;
		break;
	}
out:
	mutex_unlock(&app->lock);

	return ret ? ret : count;
}

static const struct file_operations relay_app_ctl_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= relay_app_ctl_read,
	.write	= relay_app_ctl_write,
	.llseek	= default_llseek,
};

/* Binary per-CPU control files cpuN.produced and cpuN.consumed. */

static struct rchan_buf *relay_app_cpu_buf(struct relay_app *app,
					   unsigned int cpu)
{
	struct relay_app_chan *ch;

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (!ch)
		return NULL;
	return READ_ONCE(*per_cpu_ptr(ch->rchan->buf, cpu));
}

static ssize_t relay_app_cpu_read(struct file *file, char __user *ubuf,
				  size_t count, loff_t *ppos, bool produced)
{
	struct relay_app_cpu_ctl *ctl = file->private_data;
	struct relay_app *app = ctl->app;
	struct rchan_buf *buf;
	size_t val = 0;

	mutex_lock(&app->lock);
	buf = relay_app_cpu_buf(app, ctl->cpu);
	if (buf)
		val = produced ? READ_ONCE(buf->subbufs_produced) :
				 READ_ONCE(buf->subbufs_consumed);
	mutex_unlock(&app->lock);

	if (!buf)
		return -ENODEV;
	return simple_read_from_buffer(ubuf, count, ppos, &val, sizeof(val));
}

static ssize_t relay_app_produced_read(struct file *file, char __user *ubuf,
				       size_t count, loff_t *ppos)
{
	return relay_app_cpu_read(file, ubuf, count, ppos, true);
}

static ssize_t relay_app_consumed_read(struct file *file, char __user *ubuf,
				       size_t count, loff_t *ppos)
{
	return relay_app_cpu_read(file, ubuf, count, ppos, false);
}

static ssize_t relay_app_consumed_write(struct file *file,
					const char __user *ubuf,
					size_t count, loff_t *ppos)
{
	struct relay_app_cpu_ctl *ctl = file->private_data;
	struct relay_app *app = ctl->app;
	struct rchan_buf *buf;
	struct inode *inode;
	size_t delta;

	if (count != sizeof(delta))
		return -EINVAL;
	if (copy_from_user(&delta, ubuf, sizeof(delta)))
		return -EFAULT;

	mutex_lock(&app->lock);
	buf = relay_app_cpu_buf(app, ctl->cpu);
	if (buf) {
		/* Serialise with read(2) and RELAY_IOC_CONSUME. */
		inode = d_inode(buf->dentry);
		inode_lock(inode);
		/* The reader is done with the data before the writer reuses it. */
		smp_mb();
		relay_subbufs_consumed(buf->chan, ctl->cpu, delta);
		inode_unlock(inode);
	}
	mutex_unlock(&app->lock);

	return buf ? count : -ENODEV;
}

static const struct file_operations relay_app_produced_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= relay_app_produced_read,
	.llseek	= default_llseek,
};

static const struct file_operations relay_app_consumed_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= relay_app_consumed_read,
	.write	= relay_app_consumed_write,
	.llseek	= default_llseek,
};

/* Buffer files: relay_file_operations with reference counting and ioctls. */

static int relay_app_buf_open(struct inode *inode, struct file *filp)
{
	struct rchan_buf *buf = inode->i_private;
	struct relay_app_chan *ch = buf->chan->private_data;
	int ret;

	ret = relay_file_operations.open(inode, filp);
	if (!ret)
		kref_get(&ch->kref);
	return ret;
}

static int relay_app_buf_release(struct inode *inode, struct file *filp)
{
	struct rchan_buf *buf = filp->private_data;
	struct relay_app_chan *ch = buf->chan->private_data;

	/* This may free buf and its channel, but not ch. */
	relay_file_operations.release(inode, filp);
	kref_put(&ch->kref, relay_app_chan_release);
	return 0;
}

static u32 relay_app_buf_flags(struct relay_app_chan *ch,
			       struct rchan_buf *buf)
{
	u32 flags = 0;

	if (ch->global)
		flags |= RELAY_BUF_GLOBAL;
	if (ch->overwrite)
		flags |= RELAY_BUF_OVERWRITE;
	if (READ_ONCE(buf->finalized))
		flags |= RELAY_BUF_FINALIZED;
	return flags;
}

static int relay_app_copy_out(void __user *uarg, unsigned int usize,
			      const void *kbuf, size_t ksize)
{
	if (copy_to_user(uarg, kbuf, min_t(size_t, usize, ksize)))
		return -EFAULT;
	return 0;
}

static long relay_app_ioc_get_info(struct rchan_buf *buf, void __user *uarg,
				   unsigned int usize)
{
	struct relay_app_chan *ch = buf->chan->private_data;
	struct relay_buf_info info = {};

	if (usize < RELAY_BUF_INFO_SIZE_VER0)
		return -EINVAL;

	info.subbuf_size = buf->chan->subbuf_size;
	info.n_subbufs = buf->chan->n_subbufs;
	info.mmap_len = buf->chan->alloc_size;
	info.cpu = ch->global ? 0 : buf->cpu;
	info.flags = relay_app_buf_flags(ch, buf);

	return relay_app_copy_out(uarg, usize, &info, sizeof(info));
}

static long relay_app_ioc_get_state(struct rchan_buf *buf, void __user *uarg,
				    unsigned int usize)
{
	struct relay_app_chan *ch = buf->chan->private_data;
	struct relay_app_stats *st = relay_app_buf_stats(ch, buf);
	struct relay_buf_state state = {};

	if (usize < RELAY_BUF_STATE_SIZE_VER0)
		return -EINVAL;

	state.consumed = READ_ONCE(buf->subbufs_consumed);
	/* consumed never exceeds produced: read it first. */
	smp_rmb();
	state.produced = READ_ONCE(buf->subbufs_produced);
	state.write_offset = min_t(size_t, READ_ONCE(buf->offset),
				   buf->chan->subbuf_size);
	state.lost_full = READ_ONCE(st->lost_full);
	state.lost_toobig = READ_ONCE(st->lost_toobig);
	state.lost_overwritten = READ_ONCE(st->lost_overwritten);
	state.flags = relay_app_buf_flags(ch, buf);

	return relay_app_copy_out(uarg, usize, &state, sizeof(state));
}

static long relay_app_ioc_get_subbuf(struct rchan_buf *buf, void __user *uarg,
				     unsigned int usize)
{
	struct relay_app_chan *ch = buf->chan->private_data;
	size_t subbuf_size = buf->chan->subbuf_size;
	u32 n_subbufs = buf->chan->n_subbufs;
	struct relay_subbuf sb;
	u64 consumed, produced;
	size_t padding;
	u32 idx;
	int ret;

	if (usize < RELAY_SUBBUF_SIZE_VER0)
		return -EINVAL;
	ret = copy_struct_from_user(&sb, sizeof(sb), uarg, usize);
	if (ret)
		return ret;

	consumed = READ_ONCE(buf->subbufs_consumed);
	/* consumed never exceeds produced: read it first. */
	smp_rmb();
	produced = READ_ONCE(buf->subbufs_produced);
	if (sb.seq < consumed)
		return -EINVAL;
	if (sb.seq >= produced)
		return -ENODATA;
	/* The writer is refilling (or has refilled) the sub-buffer. */
	if (ch->overwrite && sb.seq + n_subbufs <= produced)
		return -ESTALE;

	/* Pairs with the smp_mb() after the produced count's increment. */
	smp_rmb();
	div_u64_rem(sb.seq, n_subbufs, &idx);
	padding = READ_ONCE(buf->padding[idx]);
	if (ch->overwrite) {
		/* Was the padding read that of a later sub-buffer? */
		smp_rmb();
		if (sb.seq + n_subbufs <= READ_ONCE(buf->subbufs_produced))
			return -ESTALE;
	}
	padding = min_t(size_t, padding, subbuf_size - RELAY_APP_HDR_SIZE);

	sb.data_offset = (u64)idx * subbuf_size + RELAY_APP_HDR_SIZE;
	sb.data_len = subbuf_size - RELAY_APP_HDR_SIZE - padding;
	sb.padding = padding;

	return relay_app_copy_out(uarg, usize, &sb, sizeof(sb));
}

static long relay_app_ioc_consume(struct file *filp, struct rchan_buf *buf,
				  void __user *uarg, unsigned int usize)
{
	struct relay_app_chan *ch = buf->chan->private_data;
	u32 n_subbufs = buf->chan->n_subbufs;
	struct inode *inode = file_inode(filp);
	struct relay_consume c;
	u64 consumed, produced;
	int ret;

	if (usize < RELAY_CONSUME_SIZE_VER0)
		return -EINVAL;
	ret = copy_struct_from_user(&c, sizeof(c), uarg, usize);
	if (ret)
		return ret;

	/* Serialise with other consumers and read(2). */
	inode_lock(inode);
	consumed = buf->subbufs_consumed;
	produced = READ_ONCE(buf->subbufs_produced);
	if (c.seq < consumed || c.seq >= produced ||
	    c.count > produced - c.seq) {
		inode_unlock(inode);
		return -EINVAL;
	}

	/*
	 * Order the reader's accesses to the data before the new consumed
	 * count, which lets the writer reuse the sub-buffers, and before
	 * the produced count that tells which ones the writer overwrote.
	 */
	smp_mb();
	c.lost = 0;
	produced = READ_ONCE(buf->subbufs_produced);
	if (ch->overwrite && produced >= n_subbufs &&
	    c.seq < produced - n_subbufs + 1)
		c.lost = min(produced - n_subbufs + 1 - c.seq, c.count);

	c.consumed = c.seq + c.count;
	if (c.consumed != consumed) {
		WRITE_ONCE(buf->subbufs_consumed, c.consumed);
		/* read(2) restarts at the beginning of a sub-buffer. */
		buf->bytes_consumed = 0;
	}
	inode_unlock(inode);

	return relay_app_copy_out(uarg, usize, &c, sizeof(c));
}

static long relay_app_ioc_flush(struct rchan_buf *buf)
{
	struct relay_app_chan *ch = buf->chan->private_data;

	mutex_lock(&ch->flush_lock);
	if (!ch->closed)
		relay_app_flush_buf(ch, buf);
	mutex_unlock(&ch->flush_lock);
	return 0;
}

static long relay_app_ioctl(struct file *filp, unsigned int cmd,
			    unsigned long arg)
{
	struct rchan_buf *buf = filp->private_data;
	void __user *uarg = (void __user *)arg;
	unsigned int usize = _IOC_SIZE(cmd);
	unsigned int dir = _IOC_DIR(cmd);

	if (_IOC_TYPE(cmd) != RELAY_IOC_MAGIC)
		return -ENOTTY;

	switch (_IOC_NR(cmd)) {
	case _IOC_NR(RELAY_IOC_GET_INFO):
		if (dir != _IOC_READ)
			return -ENOTTY;
		return relay_app_ioc_get_info(buf, uarg, usize);
	case _IOC_NR(RELAY_IOC_GET_STATE):
		if (dir != _IOC_READ)
			return -ENOTTY;
		return relay_app_ioc_get_state(buf, uarg, usize);
	case _IOC_NR(RELAY_IOC_GET_SUBBUF):
		if (dir != (_IOC_READ | _IOC_WRITE))
			return -ENOTTY;
		return relay_app_ioc_get_subbuf(buf, uarg, usize);
	case _IOC_NR(RELAY_IOC_CONSUME):
		if (dir != (_IOC_READ | _IOC_WRITE))
			return -ENOTTY;
		return relay_app_ioc_consume(filp, buf, uarg, usize);
	case _IOC_NR(RELAY_IOC_FLUSH):
		if (cmd != RELAY_IOC_FLUSH)
			return -ENOTTY;
		return relay_app_ioc_flush(buf);
	default:
		return -ENOTTY;
	}
}

static void relay_app_create_cpu_files(struct relay_app *app, unsigned int cpu)
{
	struct relay_app_cpu_ctl *ctl = &app->cpu_ctl[cpu];
	char name[32];

	ctl->app = app;
	ctl->cpu = cpu;
	snprintf(name, sizeof(name), "cpu%u.produced", cpu);
	debugfs_create_file(name, 0400, app->dir, ctl,
			    &relay_app_produced_fops);
	snprintf(name, sizeof(name), "cpu%u.consumed", cpu);
	debugfs_create_file(name, 0600, app->dir, ctl,
			    &relay_app_consumed_fops);
}

static void relay_app_create_ctl_files(struct relay_app *app)
{
	unsigned int cpu;
	int i;

	for (i = 0; i < RELAY_APP_NR_CTL; i++) {
		app->ctl[i].app = app;
		app->ctl[i].id = i;
		debugfs_create_file(relay_app_ctl_files[i].name,
				    relay_app_ctl_files[i].mode, app->dir,
				    &app->ctl[i], &relay_app_ctl_fops);
	}

	if (app->params.global) {
		relay_app_create_cpu_files(app, 0);
		return;
	}

	cpus_read_lock();
	for_each_online_cpu(cpu)
		relay_app_create_cpu_files(app, cpu);
	cpus_read_unlock();
}

/**
 * relay_app_create() - create a relay_app and its channel
 * @dirname: name of the debugfs directory to create
 * @parent: parent directory, or %NULL for the debugfs root
 * @params: geometry and mode of the channel
 *
 * Creates the directory @dirname holding the control files and a channel
 * with the buffer files cpu0 .. cpuN-1 (cpu0 only for a global channel),
 * enabled.  The cpuN.produced and cpuN.consumed files exist for the CPUs
 * online at this time.  Must be called from process context.
 *
 * Return: the new relay_app or an ERR_PTR(): -EINVAL for bad @params
 * (@subbuf_size must exceed 5 bytes and @subbuf_size * @n_subbufs must
 * fit in 32 bits), -ENOMEM, or the error of debugfs_create_dir().
 */
struct relay_app *relay_app_create(const char *dirname, struct dentry *parent,
				   const struct relay_app_params *params)
{
	struct relay_app *app;
	int ret;

	if (!dirname || !params)
		return ERR_PTR(-EINVAL);
	ret = relay_app_check_params(params);
	if (ret)
		return ERR_PTR(ret);

	app = kzalloc(sizeof(*app), GFP_KERNEL);
	if (!app)
		return ERR_PTR(-ENOMEM);
	app->cpu_ctl = kcalloc(nr_cpu_ids, sizeof(*app->cpu_ctl), GFP_KERNEL);
	if (!app->cpu_ctl) {
		ret = -ENOMEM;
		goto err_free;
	}
	mutex_init(&app->lock);
	app->params = *params;
	app->enabled = true;

	app->dir = debugfs_create_dir(dirname, parent);
	if (IS_ERR(app->dir)) {
		ret = PTR_ERR(app->dir);
		goto err_free;
	}

	/* No control file exists yet that could race with this. */
	mutex_lock(&app->lock);
	ret = relay_app_open_chan(app);
	mutex_unlock(&app->lock);
	if (ret)
		goto err_remove;

	relay_app_create_ctl_files(app);
	return app;

err_remove:
	debugfs_remove_recursive(app->dir);
err_free:
	kfree(app->cpu_ctl);
	kfree(app);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(relay_app_create);

/**
 * relay_app_destroy() - destroy a relay_app and its channel
 * @app: the relay_app, or %NULL or an ERR_PTR() (nothing is done)
 *
 * Waits for relay_app_write() calls in progress, flushes and closes the
 * channel, and removes the directory.  Readers that still have buffer
 * files open keep the buffers: they can read and mmap the remaining data,
 * and the ioctls report %RELAY_BUF_FINALIZED.  relay_app_write() must not
 * be called once this has started.  Must be called from process context.
 */
void relay_app_destroy(struct relay_app *app)
{
	if (IS_ERR_OR_NULL(app))
		return;

	mutex_lock(&app->lock);
	app->dying = true;
	WRITE_ONCE(app->enabled, false);
	relay_app_close_chan(app);
	mutex_unlock(&app->lock);

	/* Waits for control file handlers in progress. */
	debugfs_remove_recursive(app->dir);
	mutex_destroy(&app->lock);
	kfree(app->cpu_ctl);
	kfree(app);
}
EXPORT_SYMBOL_GPL(relay_app_destroy);

static int __init relay_app_init(void)
{
	relay_app_buf_fops = relay_file_operations;
	relay_app_buf_fops.owner = THIS_MODULE;
	relay_app_buf_fops.open = relay_app_buf_open;
	relay_app_buf_fops.release = relay_app_buf_release;
	relay_app_buf_fops.unlocked_ioctl = relay_app_ioctl;
	relay_app_buf_fops.compat_ioctl = compat_ptr_ioctl;
	return 0;
}
module_init(relay_app_init);

static void __exit relay_app_exit(void)
{
}
module_exit(relay_app_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Relay channel helper with relay-apps control files and ioctls");
