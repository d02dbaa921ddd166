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
 *   cpuN.produced  binary size_t: sub-buffers produced whose padding word
 *                  is written
 *   cpuN.consumed  binary size_t; a write adds the size_t it carries (a
 *                  delta) to the sub-buffers consumed
 *
 * Every sub-buffer starts with an unsigned int holding the number of
 * padding bytes at its end, written when the writer leaves it; its data
 * follows and is subbuf_size - 4 - padding bytes long.  With
 * params.padding_size_t the word is a size_t instead, as some copies of
 * relay-apps' klog module write it (8 bytes on 64-bit kernels): readers
 * of the padding-word protocol must be told which.
 *
 * Two options change that layout.  A raw channel (params.raw) has no
 * padding word: its sub-buffers hold records only, as read(2) readers
 * want them, and mmap readers learn the padding from the ioctls only (the
 * relay-apps padding-word protocol does not apply).  A committed channel
 * (params.committed) starts the data of every sub-buffer with a u32
 * counting the bytes of records after it that writers have finished.
 * Records reserved with relay_app_reserve() are filled in place, possibly
 * after their sub-buffer went to readers, and count once
 * relay_app_commit() is called: a reader takes a sub-buffer when its
 * count covers all of its data.
 *
 * The buffer files are plain relay files created with
 * relay_debugfs_create_file(): the relay core answers the ioctls, counts
 * what the buffers lose, keeps their meta areas and calls back here to
 * flush.
 */
#ifndef RELAY_HAS_USER_ABI
/*
 * Out-of-tree builds for kernels whose relay core lacks the user ABI
 * (RELAY_HAS_USER_ABI undefined): the buffer files use
 * relay_file_operations (open, read, poll, release) plus an ioctl handler
 * and an mmap method implementing <uapi/linux/relay.h> here, with the
 * same semantics: every buffer has a meta area (struct relay_meta and its
 * slots) that the writer-side code below keeps up to date and that mmap
 * maps after the buffer.  They are created with
 * debugfs_create_file_unsafe(): debugfs' full proxy does not forward mmap,
 * and relay's file operations keep the buffer alive by reference counting,
 * so the open proxy is sufficient.
 */
#endif

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/relay.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#ifndef RELAY_HAS_USER_ABI
#include <linux/kref.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/smp.h>
#include <linux/vmalloc.h>
#include <uapi/linux/relay.h>
#endif

#include "relay_app.h"

/* Committed channels: the count at the start of every sub-buffer's data. */
#define RELAY_APP_COMMITTED_SIZE	sizeof(u32)

/* Keeps buffers alive from relay_app_reserve() to relay_app_commit(). */
DEFINE_STATIC_SRCU(relay_app_srcu);
#ifndef RELAY_HAS_USER_ABI

/* First published sizes of the ioctl structures. */
#define RELAY_BUF_INFO_SIZE_VER0	40
#define RELAY_CONSUME_SIZE_VER0		32

static_assert(sizeof(struct relay_buf_info) >= RELAY_BUF_INFO_SIZE_VER0);
static_assert(sizeof(struct relay_consume) >= RELAY_CONSUME_SIZE_VER0);

/* Offset of the slots in a meta area. */
#define RELAY_APP_META_SLOTS	ALIGN(sizeof(struct relay_meta), 8)

/*
 * Loss counters and meta area of one buffer, kept by the relay core where
 * it implements the ioctls.  Only the buffer's writer changes the
 * counters, @lost_mark and the writer-owned fields of the meta area: with
 * interrupts disabled on the buffer's CPU, or under the channel lock for
 * a global buffer.  @lost_mark is @lost_full + @lost_toobig when the
 * writer started its current sub-buffer.  The meta area lives as long as
 * the channel's struct relay_app_chan, which open buffer files (and so
 * mappings) keep.
 */
struct relay_app_stats {
	u64 lost_full;
	u64 lost_toobig;
	u64 lost_overwritten;
	u64 lost_mark;
	struct relay_meta *meta;
};
#endif

/* One relay channel, owned by its relay_app while current. */
struct relay_app_chan {
	struct rchan *rchan;
	bool overwrite;
	bool global;
	bool raw;
	bool padding_size_t;
	bool committed;
	raw_spinlock_t lock;	/* serialises writers of a global buffer */
	size_t __percpu *headed;	/* see relay_app_headed() */
#ifndef RELAY_HAS_USER_ABI
	/*
	 * Referenced by every open buffer file as well, so that the ioctl
	 * handler can use the channel after it was destroyed.
	 */
	struct kref kref;
	struct mutex flush_lock;	/* serialises FLUSH with closing */
	bool closed;
	struct relay_app_stats __percpu *stats;
	u32 meta_len;		/* of every buffer's meta area */
#endif
};

/* Bytes of the padding word at the start of every sub-buffer. */
static size_t relay_app_word_size(bool raw, bool padding_size_t)
{
	if (raw)
		return 0;
	return padding_size_t ? sizeof(size_t) : sizeof(unsigned int);
}

/* Bytes reserved at the start of every sub-buffer: the padding word. */
static size_t relay_app_hdr_size(const struct relay_app_chan *ch)
{
	return relay_app_word_size(ch->raw, ch->padding_size_t);
}

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
#ifndef RELAY_HAS_USER_ABI

/*
 * The buffer files' methods: relay_file_operations' read and poll, our
 * open, release, ioctl and mmap; at the end of the stock-kernel part.
 */
static const struct file_operations relay_app_buf_fops;

static struct relay_app_stats *
relay_app_buf_stats(struct relay_app_chan *ch, struct rchan_buf *buf)
{
	return per_cpu_ptr(ch->stats, ch->global ? 0 : buf->cpu);
}

/* Bytes of a meta area with @n_subbufs slots, 0 if too many for a u32. */
static size_t relay_app_meta_len(size_t n_subbufs)
{
	size_t len = size_add(RELAY_APP_META_SLOTS,
			      array_size(n_subbufs,
					 sizeof(struct relay_meta_slot)));

	if (len > U32_MAX - PAGE_SIZE)
		return 0;
	return PAGE_ALIGN(len);
}

static struct relay_meta_slot *relay_app_meta_slot(struct relay_meta *m,
						   size_t idx)
{
	return (struct relay_meta_slot *)((char *)m + RELAY_APP_META_SLOTS) +
	       idx;
}

/*
 * Give the buffer of @cpu (0 for a global channel) its meta area, with
 * the constant fields filled in.  Called before relay_open() creates the
 * buffer, so before anyone can map it.
 */
static int relay_app_alloc_meta(struct relay_app_chan *ch, unsigned int cpu,
				const struct relay_app_params *p)
{
	struct relay_meta *m;
	size_t i;

	m = vzalloc(ch->meta_len);
	if (!m)
		return -ENOMEM;

	m->meta_len = ch->meta_len;
	m->meta_struct_len = sizeof(*m);
	m->version = RELAY_META_VERSION;
	/* relay_app_ioc_flush() serves every channel. */
	m->caps = RELAY_META_CAP_FLUSH;
	m->subbuf_size = p->subbuf_size;
	m->n_subbufs = p->n_subbufs;
	m->cpu = cpu;
	if (ch->global)
		m->flags |= RELAY_BUF_GLOBAL;
	if (ch->overwrite)
		m->flags |= RELAY_BUF_OVERWRITE;
	m->slots_offset = RELAY_APP_META_SLOTS;
	m->slot_len = sizeof(struct relay_meta_slot);
	for (i = 0; i < p->n_subbufs; i++)
		relay_app_meta_slot(m, i)->seq = RELAY_META_SLOT_EMPTY;

	per_cpu_ptr(ch->stats, cpu)->meta = m;
	return 0;
}

/* A meta area for every buffer the channel may get. */
static int relay_app_alloc_metas(struct relay_app_chan *ch,
				 const struct relay_app_params *p)
{
	unsigned int cpu;
	int ret;

	ch->meta_len = relay_app_meta_len(p->n_subbufs);
	if (!ch->meta_len)
		return -ENOMEM;
	if (ch->global)
		return relay_app_alloc_meta(ch, 0, p);

	for_each_possible_cpu(cpu) {
		ret = relay_app_alloc_meta(ch, cpu, p);
		if (ret)
			return ret;
	}
	return 0;
}

static void relay_app_free_metas(struct relay_app_chan *ch)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		vfree(per_cpu_ptr(ch->stats, cpu)->meta);
}

/*
 * Store the writer-owned fields of a meta area, @produced and the loss
 * counters of @st, in the seqcount protocol of struct relay_meta.  A new
 * produced count comes with the committed count of the sub-buffer it
 * names, 0: nothing is written into it yet.
 */
static void relay_app_meta_publish(struct relay_app_stats *st, u64 produced)
{
	struct relay_meta *m = st->meta;
	/* Odd from whatever it was: a racing flush cannot leave it odd. */
	u32 seq = READ_ONCE(m->seq_lock) | 1;

	WRITE_ONCE(m->seq_lock, seq);
	/*
	 * Pairs with the reader's smp_rmb() (or acquire load of committed)
	 * before it loads seq_lock again: a reader that saw any store below
	 * sees seq_lock changed.  It also orders what the writer stored
	 * before, into the sub-buffers and the slots, before the new
	 * produced count, which the reader loads before that barrier and
	 * the slots and data after it.
	 */
	smp_wmb();
	if (produced != m->produced)
		WRITE_ONCE(m->committed, 0);
	WRITE_ONCE(m->produced, produced);
	WRITE_ONCE(m->lost_full, st->lost_full);
	WRITE_ONCE(m->lost_toobig, st->lost_toobig);
	WRITE_ONCE(m->lost_overwritten, st->lost_overwritten);
	/*
	 * Pairs with the reader's acquire load of seq_lock: a reader that
	 * loads the new even value sees the stores above.
	 */
	smp_wmb();
	WRITE_ONCE(m->seq_lock, seq + 1);
}

/*
 * The meta area's part of subbuf_start, as the buffer's writer.  relay
 * has counted the sub-buffer just finished, if any, in subbufs_produced:
 * its slot gets its padding and the meta area the new produced count.
 * With @overwriting, the sub-buffer about to be started replaces an
 * unconsumed one.  With @start, it is started: its slot gets its sequence
 * number before relay_app writes anything into it.
 */
static void relay_app_meta_switch(struct relay_app_chan *ch,
				  struct rchan_buf *buf, bool start,
				  bool overwriting)
{
	struct relay_app_stats *st = relay_app_buf_stats(ch, buf);
	size_t produced = buf->subbufs_produced;
	size_t n_subbufs = buf->chan->n_subbufs;
	size_t hdr = relay_app_hdr_size(ch);
	struct relay_meta *m = st->meta;
	struct relay_meta_slot *slot;
	bool finished;
	u64 lost;

	/* A full buffer refused the switch before: nothing finished since. */
	finished = produced != m->produced;
	if (finished) {
		slot = relay_app_meta_slot(m, (produced - 1) % n_subbufs);
		WRITE_ONCE(slot->padding,
			   min_t(size_t, buf->padding[(produced - 1) % n_subbufs],
				 buf->chan->subbuf_size - hdr));
	}
	if (overwriting)
		WRITE_ONCE(st->lost_overwritten, st->lost_overwritten + 1);
	if (finished || overwriting)
		relay_app_meta_publish(st, produced);
	if (!start)
		return;

	slot = relay_app_meta_slot(m, produced % n_subbufs);
	WRITE_ONCE(slot->seq, produced);
	/*
	 * Pairs with the reader's smp_rmb() between copying a sub-buffer's
	 * data out and loading its slot's seq again: a reader that copied
	 * anything written into the slot or the sub-buffer from here on sees
	 * the new seq.
	 */
	smp_mb();
	WRITE_ONCE(slot->header, hdr);
	WRITE_ONCE(slot->padding, 0);
	lost = st->lost_full + st->lost_toobig;
	WRITE_ONCE(slot->lost_before, lost - st->lost_mark);
	st->lost_mark = lost;
}

/*
 * A record was written into the current sub-buffer, after the ones before
 * it: its end is the sub-buffer's new committed count.  Like
 * __relay_commit() on kernels whose core implements the ioctls, this does
 * not wait for room reserved with relay_app_reserve() before it: committed
 * channels count their finished bytes in the sub-buffers.
 */
static void relay_app_meta_commit(struct relay_app_chan *ch,
				  struct rchan_buf *buf)
{
	struct relay_meta *m = relay_app_buf_stats(ch, buf)->meta;

	/*
	 * After the record's bytes, and after the produced count it belongs
	 * to: pairs with the reader's acquire load of committed, which it
	 * follows with its second load of seq_lock.
	 */
	smp_store_release(&m->committed, buf->offset);
}

/* A write was dropped and counted in @st: publish the loss counters. */
static void relay_app_meta_lost(struct relay_app_stats *st)
{
	relay_app_meta_publish(st, st->meta->produced);
}

/*
 * Mark every meta area of @ch finalized, once no writer and no flush can
 * run any more: see relay_app_close_chan().
 */
static void relay_app_meta_finalize(struct relay_app_chan *ch)
{
	struct relay_meta *m;
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		m = per_cpu_ptr(ch->stats, cpu)->meta;
		if (!m)
			continue;
		/*
		 * After the last update of produced, which this CPU has seen
		 * (the writers' and flushes' ends were waited for): pairs
		 * with the reader's acquire load of flags.
		 */
		smp_store_release(&m->flags, m->flags | RELAY_BUF_FINALIZED);
	}
}

/*
 * The consumed count of @buf changed: store it in the meta area.  Called
 * with the buffer file's inode lock held, which all consumers take.
 */
static void relay_app_meta_consumed(struct rchan_buf *buf)
{
	struct relay_app_chan *ch = buf->chan->private_data;

	WRITE_ONCE(relay_app_buf_stats(ch, buf)->meta->consumed,
		   buf->subbufs_consumed);
}
#endif

/*
 * The sub-buffers of @buf whose padding word is written.  relay counts a
 * sub-buffer produced before it calls subbuf_start, which writes the word:
 * a reader going by the produced count alone could take the sub-buffer
 * before its word is there.  cpuN.produced reports this count instead.
 */
static size_t *relay_app_headed(struct relay_app_chan *ch,
				struct rchan_buf *buf)
{
	return per_cpu_ptr(ch->headed, ch->global ? 0 : buf->cpu);
}

static void relay_app_chan_free(struct relay_app_chan *ch)
{
	free_percpu(ch->headed);
#ifndef RELAY_HAS_USER_ABI
	mutex_destroy(&ch->flush_lock);
	relay_app_free_metas(ch);
	free_percpu(ch->stats);
#endif
	kfree(ch);
}
#ifndef RELAY_HAS_USER_ABI

static void relay_app_chan_release(struct kref *kref)
{
	relay_app_chan_free(container_of(kref, struct relay_app_chan, kref));
}
#endif

/*
 * Relay callbacks.  subbuf_start runs in the writer's context (see
 * relay_app_write()) or in a flush, both with interrupts disabled and
 * excluding each other.
 */
#ifdef RELAY_SUBBUF_START_PREV_PADDING
static int relay_app_subbuf_start(struct rchan_buf *buf, void *subbuf,
				  void *prev_subbuf, size_t prev_padding)
{
#else
static int relay_app_subbuf_start(struct rchan_buf *buf, void *subbuf,
				  void *prev_subbuf)
{
	size_t prev_padding =
		buf->padding[(buf->subbufs_produced - 1) % buf->chan->n_subbufs];
#endif
	struct relay_app_chan *ch = buf->chan->private_data;
	bool full;

	/*
	 * The sub-buffer just finished, counted in subbufs_produced already,
	 * gets its padding in its header.  When a full buffer keeps the
	 * writer from switching, this rewrites the same value on every
	 * attempt, which is harmless.
	 */
	if (prev_subbuf && !ch->raw) {
		if (ch->padding_size_t)
			*(size_t *)prev_subbuf = prev_padding;
		else
			*(unsigned int *)prev_subbuf = prev_padding;
		/* Pairs with smp_load_acquire() in relay_app_cpu_read(). */
		smp_store_release(relay_app_headed(ch, buf),
				  buf->subbufs_produced);
	}

	full = relay_buf_full(buf);
#ifndef RELAY_HAS_USER_ABI
	/*
	 * A full buffer refuses the switch in no-overwrite mode; in overwrite
	 * mode its oldest unconsumed sub-buffer is about to be reused.
	 */
	relay_app_meta_switch(ch, buf, !full || ch->overwrite,
			      full && ch->overwrite);
#endif
	/* No-overwrite: the write is dropped and counted. */
	if (full && !ch->overwrite)
		return 0;

	subbuf_start_reserve(buf, relay_app_hdr_size(ch));
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
#ifdef RELAY_HAS_USER_ABI
	return relay_debugfs_create_file(filename, mode, parent, buf);
#else
	return debugfs_create_file_unsafe(filename, mode, parent, buf,
					  &relay_app_buf_fops);
#endif
}

static int relay_app_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}
#ifdef RELAY_HAS_USER_ABI

static void relay_app_flush_buf(struct relay_app_chan *ch,
				struct rchan_buf *buf);

/* RELAY_IOC_FLUSH, called by the relay core with cpus_read_lock() held. */
static void relay_app_flush_buf_cb(struct rchan_buf *buf)
{
	relay_app_flush_buf(buf->chan->private_data, buf);
}
#endif

static const struct rchan_callbacks relay_app_callbacks = {
	.subbuf_start		= relay_app_subbuf_start,
	.create_buf_file	= relay_app_create_buf_file,
	.remove_buf_file	= relay_app_remove_buf_file,
#ifdef RELAY_HAS_USER_ABI
	.flush_buf		= relay_app_flush_buf_cb,
#endif
};

/* The same for overwrite mode, which the relay core wants to be told. */
static const struct rchan_callbacks relay_app_overwrite_callbacks = {
	.subbuf_start		= relay_app_subbuf_start,
	.create_buf_file	= relay_app_create_buf_file,
	.remove_buf_file	= relay_app_remove_buf_file,
#ifdef RELAY_HAS_USER_ABI
	.flush_buf		= relay_app_flush_buf_cb,
	.overwrite		= true,
#endif
};

/*
 * Room for a record of @len bytes, reserved as the buffer's writer (with
 * interrupts disabled, or under the lock of a global buffer).  In a
 * committed channel the first record of a sub-buffer follows the
 * sub-buffer's committed count, set to 0 then; *@committed points at it.
 *
 * Return: the room, ERR_PTR(-ENOBUFS) when the buffer is full
 * (no-overwrite mode) or ERR_PTR(-EMSGSIZE) when @len exceeds a
 * sub-buffer's data area.
 */
static void *relay_app_reserve_buf(struct relay_app_chan *ch,
				   struct rchan_buf *buf, size_t len,
				   atomic_t **committed)
{
	size_t subbuf_size = buf->chan->subbuf_size;
	size_t hdr = relay_app_hdr_size(ch);
	size_t cw = ch->committed ? RELAY_APP_COMMITTED_SIZE : 0;
	/* An empty sub-buffer needs room for the committed count too. */
	size_t need = len + (buf->offset == hdr ? cw : 0);
	void *room;

#ifdef RELAY_HAS_USER_ABI
	/*
	 * Checked here rather than by relay_switch_subbuf(), which would
	 * switch sub-buffers first; counted as it counts them.
	 */
	if (unlikely(len > subbuf_size - hdr - cw)) {
		relay_drop_toobig(buf);
		return ERR_PTR(-EMSGSIZE);
	}
	/* relay_switch_subbuf() counts a write dropped when full. */
	if (unlikely(buf->offset + need > subbuf_size) &&
	    !relay_switch_subbuf(buf, len + cw))
		return ERR_PTR(-ENOBUFS);
#else
	struct relay_app_stats *st = relay_app_buf_stats(ch, buf);

	if (unlikely(len > subbuf_size - hdr - cw)) {
		WRITE_ONCE(st->lost_toobig, st->lost_toobig + 1);
		relay_app_meta_lost(st);
		return ERR_PTR(-EMSGSIZE);
	}
	/* With the size checked, a failed switch means a full buffer. */
	if (unlikely(buf->offset + need > subbuf_size) &&
	    !relay_switch_subbuf(buf, len + cw)) {
		WRITE_ONCE(st->lost_full, st->lost_full + 1);
		relay_app_meta_lost(st);
		return ERR_PTR(-ENOBUFS);
	}
#endif

	if (cw) {
		if (buf->offset == hdr) {
			atomic_set(buf->data + hdr, 0);
			buf->offset += cw;
		}
		*committed = buf->data + hdr;
	}
	room = buf->data + buf->offset;
	WRITE_ONCE(buf->offset, buf->offset + len);
	return room;
}

/* Write one record of @len bytes made of @vec; runs as the buffer's writer. */
static int relay_app_write_buf(struct relay_app_chan *ch,
			       struct rchan_buf *buf,
			       const struct kvec *vec, unsigned int nr,
			       size_t len)
{
	atomic_t *committed = NULL;
	unsigned int i;
	char *room;

	/* relay_switch_subbuf() returns 0 for a successful empty write. */
	if (unlikely(!len))
		return 0;

	room = relay_app_reserve_buf(ch, buf, len, &committed);
	if (IS_ERR(room))
		return PTR_ERR(room);
	for (i = 0; i < nr; i++) {
		memcpy(room, vec[i].iov_base, vec[i].iov_len);
		room += vec[i].iov_len;
	}
	/*
	 * Readers may take the sub-buffer being written up to here, unless
	 * room reserved before this record may still be unfilled: committed
	 * channels count their finished bytes in the sub-buffer instead.
	 */
	if (!ch->committed)
#ifdef RELAY_HAS_USER_ABI
		__relay_commit(buf);
#else
		relay_app_meta_commit(ch, buf);
#endif
	/* Readers get the current sub-buffer only after a later switch. */
	if (committed)
		atomic_add(len, committed);
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
	struct kvec vec = { .iov_base = (void *)data, .iov_len = len };

	return relay_app_writev(app, &vec, 1);
}
EXPORT_SYMBOL_GPL(relay_app_write);

/**
 * relay_app_writev() - write a record gathered from several pieces
 * @app: the relay_app
 * @vec: the pieces of the record, in order
 * @nr: number of pieces
 *
 * Like relay_app_write() for the record made of @vec's pieces, copied
 * into the buffer with nothing in between (a header and a payload, say).
 *
 * Return: as relay_app_write().
 */
int relay_app_writev(struct relay_app *app, const struct kvec *vec,
		     unsigned int nr)
{
	struct relay_app_chan *ch;
	struct rchan_buf *buf;
	unsigned long flags;
	size_t len = 0;
	unsigned int i;
	int ret;

	for (i = 0; i < nr; i++)
		len += vec[i].iov_len;

	rcu_read_lock();
	ch = rcu_dereference(app->chan);
	if (!ch) {
		ret = -ENODEV;
	} else if (!READ_ONCE(app->enabled)) {
		ret = -EAGAIN;
	} else if (ch->global) {
		raw_spin_lock_irqsave(&ch->lock, flags);
		buf = *per_cpu_ptr(ch->rchan->buf, 0);
		ret = relay_app_write_buf(ch, buf, vec, nr, len);
		raw_spin_unlock_irqrestore(&ch->lock, flags);
	} else {
		local_irq_save(flags);
		buf = *this_cpu_ptr(ch->rchan->buf);
		ret = buf ? relay_app_write_buf(ch, buf, vec, nr, len) :
			    -ENODEV;
		local_irq_restore(flags);
	}
	rcu_read_unlock();

	return ret;
}
EXPORT_SYMBOL_GPL(relay_app_writev);

/**
 * relay_app_reserve() - reserve room for a record, to be filled in place
 * @app: the relay_app, created with params.committed
 * @len: record length in bytes
 * @slot: filled in with the room reserved
 *
 * Reserves @len bytes in the current CPU's buffer (or the global buffer),
 * which the caller fills through @slot->data and then hands over with
 * relay_app_commit().  In between the caller may sleep and move to
 * another CPU; writers and flushes may meanwhile close the sub-buffer
 * holding the room and pass it to readers, whose committed count then
 * tells them that it is not complete yet.  Every successful reservation
 * must be committed, soon, by the same task or in the same context:
 * closing the channel waits for it.  Callable from any context but NMI.
 *
 * Return: 0 with @slot filled in, -EINVAL when the channel is not a
 * committed one, or the errors of relay_app_write().
 */
int relay_app_reserve(struct relay_app *app, size_t len,
		      struct relay_app_slot *slot)
{
	struct relay_app_chan *ch;
	atomic_t *committed = NULL;
	struct rchan_buf *buf;
	unsigned long flags;
	void *room;
	int idx;

	if (!len)
		return -EINVAL;

	idx = srcu_read_lock(&relay_app_srcu);
	ch = srcu_dereference(app->chan, &relay_app_srcu);
	if (!ch) {
		room = ERR_PTR(-ENODEV);
	} else if (!ch->committed) {
		room = ERR_PTR(-EINVAL);
	} else if (!READ_ONCE(app->enabled)) {
		room = ERR_PTR(-EAGAIN);
	} else if (ch->global) {
		raw_spin_lock_irqsave(&ch->lock, flags);
		buf = *per_cpu_ptr(ch->rchan->buf, 0);
		room = relay_app_reserve_buf(ch, buf, len, &committed);
		raw_spin_unlock_irqrestore(&ch->lock, flags);
	} else {
		local_irq_save(flags);
		buf = *this_cpu_ptr(ch->rchan->buf);
		room = buf ? relay_app_reserve_buf(ch, buf, len, &committed) :
			     ERR_PTR(-ENODEV);
		local_irq_restore(flags);
	}
	if (IS_ERR(room)) {
		srcu_read_unlock(&relay_app_srcu, idx);
		return PTR_ERR(room);
	}

	slot->data = room;
	slot->len = len;
	slot->committed = committed;
	slot->srcu_idx = idx;
	return 0;
}
EXPORT_SYMBOL_GPL(relay_app_reserve);

/**
 * relay_app_commit() - hand a filled reservation over to readers
 * @app: the relay_app passed to relay_app_reserve()
 * @slot: the reservation
 *
 * Adds the slot's length to the committed count of its sub-buffer, after
 * the slot's contents: a reader that sees the count sees the contents.
 */
void relay_app_commit(struct relay_app *app, struct relay_app_slot *slot)
{
	/* Pairs with the reader's acquire load of the count. */
	smp_mb__before_atomic();
	atomic_add(slot->len, slot->committed);
	srcu_read_unlock(&relay_app_srcu, slot->srcu_idx);
}
EXPORT_SYMBOL_GPL(relay_app_commit);

/**
 * relay_app_dir() - the debugfs directory of a relay_app
 * @app: the relay_app
 *
 * For the client's own control files next to relay_app's; they must be
 * gone before relay_app_destroy() is called, or be removed by it.
 *
 * Return: the directory given to relay_app_create().
 */
struct dentry *relay_app_dir(struct relay_app *app)
{
	return app->dir;
}
EXPORT_SYMBOL_GPL(relay_app_dir);
#ifndef RELAY_HAS_USER_ABI

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
	if (offset > relay_app_hdr_size(buf->chan->private_data) &&
	    offset <= buf->chan->subbuf_size)
		relay_switch_subbuf(buf, 0);
}
#endif

/*
 * Flush one buffer.  The caller holds cpus_read_lock(), so that the CPU
 * stays online or offline meanwhile.
 */
static void relay_app_flush_buf(struct relay_app_chan *ch,
				struct rchan_buf *buf)
{
	unsigned long flags;

	if (ch->global) {
		raw_spin_lock_irqsave(&ch->lock, flags);
#ifdef RELAY_HAS_USER_ABI
		relay_flush_buf(buf);
#else
		relay_app_flush_local(buf);
#endif
		raw_spin_unlock_irqrestore(&ch->lock, flags);
		return;
	}

#ifdef RELAY_HAS_USER_ABI
	relay_flush_buf_on_cpu(buf);
#else
	if (cpu_online(buf->cpu)) {
		smp_call_function_single(buf->cpu, relay_app_flush_local,
					 buf, 1);
	} else {
		/* No writer runs on an offline CPU. */
		local_irq_save(flags);
		relay_app_flush_local(buf);
		local_irq_restore(flags);
	}
#endif
}

static void relay_app_flush_all(struct relay_app_chan *ch)
{
	struct rchan_buf *buf;
	unsigned int cpu;

	cpus_read_lock();
#ifndef RELAY_HAS_USER_ABI
	mutex_lock(&ch->flush_lock);
#endif
	for_each_possible_cpu(cpu) {
		buf = READ_ONCE(*per_cpu_ptr(ch->rchan->buf, cpu));
		if (buf)
			relay_app_flush_buf(ch, buf);
		if (ch->global)
			break;
	}
#ifndef RELAY_HAS_USER_ABI
	mutex_unlock(&ch->flush_lock);
#endif
	cpus_read_unlock();
}

static int relay_app_check_params(const struct relay_app_params *p)
{
	size_t hdr = relay_app_word_size(p->raw, p->padding_size_t);

	if (p->raw && p->padding_size_t)
		return -EINVAL;
	if (p->committed) {
		/*
		 * Aligned counts, and no overwrite: a late commit must not
		 * land in a sub-buffer that the writer reused.
		 */
		if (p->overwrite ||
		    !IS_ALIGNED(p->subbuf_size, RELAY_APP_COMMITTED_SIZE))
			return -EINVAL;
		hdr += RELAY_APP_COMMITTED_SIZE;
	}
	if (p->subbuf_size <= hdr + 1 || !p->n_subbufs ||
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

#ifdef kzalloc_obj
	ch = kzalloc_obj(*ch);
#else
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
#endif
	if (!ch)
		return -ENOMEM;
	ch->headed = alloc_percpu(size_t);
	if (!ch->headed) {
		kfree(ch);
		return -ENOMEM;
	}
#ifndef RELAY_HAS_USER_ABI
	ch->stats = alloc_percpu(struct relay_app_stats);
	if (!ch->stats) {
		free_percpu(ch->headed);
		kfree(ch);
		return -ENOMEM;
	}
	kref_init(&ch->kref);
	mutex_init(&ch->flush_lock);
#endif
	raw_spin_lock_init(&ch->lock);
	ch->overwrite = app->params.overwrite;
	ch->global = app->params.global;
	ch->raw = app->params.raw;
	ch->padding_size_t = app->params.padding_size_t;
	ch->committed = app->params.committed;

#ifndef RELAY_HAS_USER_ABI
	ret = relay_app_alloc_metas(ch, &app->params);
	if (ret) {
		kref_put(&ch->kref, relay_app_chan_release);
		return ret;
	}
#endif
	ch->rchan = relay_open("cpu", app->dir, app->params.subbuf_size,
			       app->params.n_subbufs,
			       ch->overwrite ? &relay_app_overwrite_callbacks :
					       &relay_app_callbacks, ch);
	if (!ch->rchan) {
#ifdef RELAY_HAS_USER_ABI
		relay_app_chan_free(ch);
#else
		kref_put(&ch->kref, relay_app_chan_release);
#endif
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
	/* Reservations in SRCU ones, until they are committed. */
	if (ch->committed)
		synchronize_srcu(&relay_app_srcu);

	relay_app_flush_all(ch);
#ifndef RELAY_HAS_USER_ABI
	mutex_lock(&ch->flush_lock);
	ch->closed = true;
	/* No writer is left, and no flush comes after the one above. */
	relay_app_meta_finalize(ch);
	mutex_unlock(&ch->flush_lock);
#endif

	relay_close(ch->rchan);
	ch->rchan = NULL;
#ifdef RELAY_HAS_USER_ABI
	relay_app_chan_free(ch);
#else
	kref_put(&ch->kref, relay_app_chan_release);
#endif
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
#ifdef RELAY_HAS_USER_ABI
	struct rchan_buf *buf;
#else
	struct relay_app_stats *st;
#endif
	unsigned int cpu;
	u64 sum = 0;

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (!ch)
		return 0;

	for_each_possible_cpu(cpu) {
#ifdef RELAY_HAS_USER_ABI
		buf = READ_ONCE(*per_cpu_ptr(ch->rchan->buf, cpu));
		if (buf)
			sum += READ_ONCE(buf->stats.full_count) +
			       READ_ONCE(buf->stats.big_count);
#else
		st = per_cpu_ptr(ch->stats, cpu);
		sum += READ_ONCE(st->lost_full) + READ_ONCE(st->lost_toobig);
#endif
		if (ch->global)
			break;
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
		if (val <= relay_app_word_size(app->params.raw,
					       app->params.padding_size_t) + 1 ||
		    val > UINT_MAX)
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

/* The buffer of @cpu, and its channel in *@chp unless @chp is NULL. */
static struct rchan_buf *relay_app_cpu_buf(struct relay_app *app,
					   unsigned int cpu,
					   struct relay_app_chan **chp)
{
	struct relay_app_chan *ch;

	ch = rcu_dereference_protected(app->chan, lockdep_is_held(&app->lock));
	if (!ch)
		return NULL;
	if (chp)
		*chp = ch;
	return READ_ONCE(*per_cpu_ptr(ch->rchan->buf, cpu));
}

static ssize_t relay_app_cpu_read(struct file *file, char __user *ubuf,
				  size_t count, loff_t *ppos, bool produced)
{
	struct relay_app_cpu_ctl *ctl = file->private_data;
	struct relay_app *app = ctl->app;
	struct relay_app_chan *ch;
	struct rchan_buf *buf;
	size_t val = 0;

	mutex_lock(&app->lock);
	buf = relay_app_cpu_buf(app, ctl->cpu, &ch);
	if (buf && !produced)
		val = READ_ONCE(buf->subbufs_consumed);
	else if (buf && ch->raw)
		val = READ_ONCE(buf->subbufs_produced);
	else if (buf)
		/* Pairs with smp_store_release() in relay_app_subbuf_start(). */
		val = smp_load_acquire(relay_app_headed(ch, buf));
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
	buf = relay_app_cpu_buf(app, ctl->cpu, NULL);
	if (buf) {
		/* Serialise with read(2) and RELAY_IOC_CONSUME. */
		inode = d_inode(buf->dentry);
		inode_lock(inode);
		/* The reader is done with the data before the writer reuses it. */
		smp_mb();
		relay_subbufs_consumed(buf->chan, ctl->cpu, delta);
#ifndef RELAY_HAS_USER_ABI
		relay_app_meta_consumed(buf);
#endif
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
#ifndef RELAY_HAS_USER_ABI

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

/* Returns the number of bytes filled, or -EFAULT. */
static long relay_app_copy_out(void __user *uarg, unsigned int usize,
			       const void *kbuf, size_t ksize)
{
	size_t len = min_t(size_t, usize, ksize);

	if (copy_to_user(uarg, kbuf, len))
		return -EFAULT;
	return len;
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
	info.meta_len = ch->meta_len;

	return relay_app_copy_out(uarg, usize, &info, sizeof(info));
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
	/* Count 0 only asks for the consumed count: seq is ignored. */
	if (!c.count) {
		inode_unlock(inode);
		c.lost = 0;
		c.consumed = consumed;
		return relay_app_copy_out(uarg, usize, &c, sizeof(c));
	}
	/* Nothing is skipped: release from the consumed count on. */
	if (c.seq != consumed || c.seq >= produced ||
	    c.count > produced - consumed) {
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
	WRITE_ONCE(buf->subbufs_consumed, c.consumed);
	/* read(2) restarts at the beginning of a sub-buffer. */
	buf->bytes_consumed = 0;
	relay_app_meta_consumed(buf);
	inode_unlock(inode);

	return relay_app_copy_out(uarg, usize, &c, sizeof(c));
}

static long relay_app_ioc_flush(struct rchan_buf *buf)
{
	struct relay_app_chan *ch = buf->chan->private_data;

	cpus_read_lock();
	mutex_lock(&ch->flush_lock);
	if (!ch->closed)
		relay_app_flush_buf(ch, buf);
	mutex_unlock(&ch->flush_lock);
	cpus_read_unlock();
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

/*
 * relay_file_operations is not a constant expression, so its methods are
 * called through wrappers rather than copied into our structure.
 */
static ssize_t relay_app_buf_read(struct file *filp, char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct rchan_buf *buf = filp->private_data;
	struct inode *inode = file_inode(filp);
	ssize_t ret;

	/* Takes the inode lock itself. */
	ret = relay_file_operations.read(filp, ubuf, count, ppos);
	/* read(2) consumes what it returns, and skips what was overwritten. */
	inode_lock(inode);
	relay_app_meta_consumed(buf);
	inode_unlock(inode);
	return ret;
}

static __poll_t relay_app_buf_poll(struct file *filp, poll_table *wait)
{
	return relay_file_operations.poll(filp, wait);
}

/*
 * A page of a mapping: the buffer's at page offsets below mmap_len, the
 * meta area's from there on.  The mapping keeps the file open, and so
 * buf, its channel and our struct relay_app_chan alive.
 */
static vm_fault_t relay_app_buf_fault(struct vm_fault *vmf)
{
	struct rchan_buf *buf = vmf->vma->vm_private_data;
	struct relay_app_chan *ch = buf->chan->private_data;
	unsigned long buf_pages = buf->chan->alloc_size >> PAGE_SHIFT;
	pgoff_t pgoff = vmf->pgoff;
	struct page *page;
	void *addr;

	if (pgoff < buf_pages)
		addr = buf->start + (pgoff << PAGE_SHIFT);
	else if (pgoff - buf_pages < ch->meta_len >> PAGE_SHIFT)
		addr = (char *)relay_app_buf_stats(ch, buf)->meta +
		       ((pgoff - buf_pages) << PAGE_SHIFT);
	else
		return VM_FAULT_SIGBUS;

	page = vmalloc_to_page(addr);
	if (!page)
		return VM_FAULT_SIGBUS;
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct relay_app_buf_vm_ops = {
	.fault	= relay_app_buf_fault,
};

/*
 * Maps, read-only, the buffer (offset 0, mmap_len bytes), the buffer and
 * its meta area (offset 0, mmap_len + meta_len bytes) or the meta area
 * alone (offset mmap_len, meta_len bytes).  Stock relay's mmap, which
 * this replaces, checks the length only, and its fault handler would hand
 * out the pages after the buffer.
 */
static int relay_app_buf_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct rchan_buf *buf = filp->private_data;
	struct relay_app_chan *ch = buf->chan->private_data;
	unsigned long len = vma->vm_end - vma->vm_start;
	unsigned long buf_len = buf->chan->alloc_size;
	bool ok;

	if (!vma->vm_pgoff)
		ok = len == buf_len ||
		     (len > buf_len && len - buf_len == ch->meta_len);
	else
		ok = vma->vm_pgoff == buf_len >> PAGE_SHIFT &&
		     len == ch->meta_len;
	if (!ok)
		return -EINVAL;
	/* Only the writer writes into the buffer and the meta area. */
	if (vma->vm_flags & VM_WRITE)
		return -EPERM;

	vma->vm_ops = &relay_app_buf_vm_ops;
	vm_flags_mod(vma, VM_DONTEXPAND, VM_MAYWRITE);
	vma->vm_private_data = buf;
	return 0;
}

static const struct file_operations relay_app_buf_fops = {
	.owner		= THIS_MODULE,
	.open		= relay_app_buf_open,
	.poll		= relay_app_buf_poll,
	.mmap		= relay_app_buf_mmap,
	.read		= relay_app_buf_read,
	.unlocked_ioctl	= relay_app_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.release	= relay_app_buf_release,
};
#endif /* !RELAY_HAS_USER_ABI */

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
 * (@subbuf_size must exceed its headers by at least 2 bytes, 5 bytes by
 * default, @subbuf_size * @n_subbufs must fit in 32 bits, and see struct
 * relay_app_params for @padding_size_t and @committed), -ENOMEM, or the
 * error of
 * debugfs_create_dir().
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

#ifdef kzalloc_obj
	app = kzalloc_obj(*app);
#else
	app = kzalloc(sizeof(*app), GFP_KERNEL);
#endif
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

static void __exit relay_app_exit(void)
{
}
module_exit(relay_app_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Relay channel helper with relay-apps control files and ioctls");
