/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User ABI for readers of relay channel buffer files.
 *
 * A relay buffer is a ring of n_subbufs sub-buffers of subbuf_size bytes.
 * The writer fills sub-buffer (produced % n_subbufs); a sub-buffer is
 * "ready" once the writer has switched away from it.  Sub-buffers are
 * named by a 64-bit sequence number: the value of the produced counter
 * when the writer started it.
 *
 * An mmap reader learns the geometry once (RELAY_IOC_GET_INFO) and maps
 * the buffer together with the meta area that follows it (struct
 * relay_meta, read-only): the produced count, the loss counters and, per
 * slot of the ring, which sub-buffer it holds and where its data lies.  A
 * reader that keeps up makes no system call per sub-buffer: it waits with
 * poll(2), reads the meta area, and releases what it read with one
 * RELAY_IOC_CONSUME per batch.
 *
 * Every structure may grow at its end.  The size user space passes is
 * the one encoded in the ioctl number (_IOC_SIZE): the kernel accepts any
 * size from the first published one up, copies out no more than user
 * space asked for, requires input bytes it does not know to be zero, and
 * returns the number of bytes it filled.
 */
#ifndef _UAPI_LINUX_RELAY_H
#define _UAPI_LINUX_RELAY_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Buffer flags, in struct relay_buf_info and struct relay_meta. */
#define RELAY_BUF_GLOBAL	(1U << 0) /* one buffer shared by all CPUs */
#define RELAY_BUF_OVERWRITE	(1U << 1) /* writer overwrites unconsumed data */
#define RELAY_BUF_FINALIZED	(1U << 2) /* channel closed, no more data */

/**
 * struct relay_buf_info - geometry of a relay buffer, fixed while open
 * @subbuf_size: size of one sub-buffer in bytes
 * @n_subbufs: number of sub-buffers in the ring
 * @mmap_len: the only length mmap() accepts for this file
 * @cpu: CPU the buffer belongs to (0 for a global buffer)
 * @flags: RELAY_BUF_* flags
 * @meta_len: length of the meta area (struct relay_meta), which is mapped
 *	at offset @mmap_len: map @mmap_len + @meta_len bytes at offset 0 for
 *	both, or @meta_len bytes at offset @mmap_len for the meta area alone
 */
struct relay_buf_info {
	__u64 subbuf_size;
	__u64 n_subbufs;
	__u64 mmap_len;
	__u32 cpu;
	__u32 flags;
	__u64 meta_len;
};

/* Capabilities, in struct relay_meta. */
#define RELAY_META_CAP_FLUSH	(1ULL << 0) /* RELAY_IOC_FLUSH is implemented */

#define RELAY_META_VERSION	1

/**
 * struct relay_meta - the meta area, mapped read-only after the buffer
 * @meta_len: bytes of the meta area: this structure, then the slots
 * @meta_struct_len: bytes of this structure the kernel fills; fields
 *	beyond it are absent
 * @version: RELAY_META_VERSION
 * @seq_lock: odd while the writer updates the fields it owns (see below)
 * @caps: RELAY_META_CAP_* flags
 * @subbuf_size: size of one sub-buffer in bytes
 * @n_subbufs: number of sub-buffers in the ring, and of slots
 * @cpu: CPU the buffer belongs to (0 for a global buffer)
 * @flags: RELAY_BUF_* flags; RELAY_BUF_FINALIZED is stored with release
 *	semantics after the last update of @produced
 * @slots_offset: offset of the first struct relay_meta_slot from the
 *	start of the meta area
 * @slot_len: bytes per slot; slot i is at @slots_offset + i * @slot_len
 * @produced: sub-buffers the writer has completed: the ready ones are
 *	@consumed to @produced - 1
 * @lost_full: writes dropped because every sub-buffer was unconsumed
 *	(no-overwrite mode)
 * @lost_toobig: writes dropped because they exceed one sub-buffer
 * @lost_overwritten: sub-buffers the writer reused before they were
 *	consumed (overwrite mode); a reader that copied one intact (see
 *	struct relay_meta_slot) before consuming it still has its data
 * @consumed: sub-buffers released by readers (RELAY_IOC_CONSUME, read(2))
 * @committed: bytes of sub-buffer @produced, the one being written, that
 *	its writer has finished (relay_write(), relay_commit()), counted
 *	from the start of the sub-buffer, header included; stored with
 *	release semantics after those bytes.  Above @subbuf_size, or while
 *	slot (@produced % @n_subbufs) does not hold @produced, the writer
 *	has no current sub-buffer (a full buffer stopped it)
 * @reserved: zero
 *
 * The writer owns @produced and the lost counters, and updates them as a
 * sequence count does: @seq_lock is made odd, the fields are stored, then
 * @seq_lock is made even again, with a write barrier after each step.  A
 * reader loads @seq_lock with acquire semantics, retries while it is odd,
 * reads the fields, issues a read barrier, and retries if @seq_lock
 * changed.  The sub-buffers below the @produced it read, and their slots,
 * are then complete for it.  On 64-bit kernels each field alone may also
 * be read with one load.  @consumed is stored by whoever consumes; on
 * 32-bit kernels it is written in two halves, and RELAY_IOC_CONSUME
 * returns it whole.
 *
 * @committed belongs to the @produced read around it: load @seq_lock,
 * @produced and the seq of slot (@produced % @n_subbufs) as above, load
 * @committed with acquire semantics, then check @seq_lock again.  If the
 * slot holds @produced and @committed is at most @subbuf_size, the bytes
 * of that sub-buffer from its header up to @committed are complete for
 * the reader (in overwrite mode, until the writer reuses the slot).
 */
struct relay_meta {
	__u32 meta_len;
	__u32 meta_struct_len;
	__u32 version;
	__u32 seq_lock;
	__u64 caps;
	__u64 subbuf_size;
	__u64 n_subbufs;
	__u32 cpu;
	__u32 flags;
	__u32 slots_offset;
	__u32 slot_len;
	__u64 produced;
	__u64 lost_full;
	__u64 lost_toobig;
	__u64 lost_overwritten;
	__u64 consumed;
	__u32 committed;
	__u32 reserved;
};

/* relay_meta_slot.seq of a slot that never held a sub-buffer. */
#define RELAY_META_SLOT_EMPTY	(~0ULL)

/**
 * struct relay_meta_slot - one slot of the ring, in the meta area
 * @seq: sequence number of the sub-buffer the slot holds.  The writer
 *	stores it before it writes anything into the slot, with a full
 *	barrier between.
 * @header: bytes at the start of the sub-buffer reserved by the client
 *	(subbuf_start_reserve()); the data follows them
 * @padding: unused bytes at the end of the sub-buffer, valid once it is
 *	ready (@seq below struct relay_meta.produced)
 * @lost_before: writes dropped (buffer full or too big) after the writer
 *	started the previous sub-buffer and before it started this one
 *
 * For a ready sub-buffer @seq, slot (@seq % n_subbufs) holds it if its
 * @seq says so; its data are @subbuf_size - @header - @padding bytes at
 * offset (@seq % n_subbufs) * subbuf_size + @header of the mapping.  In
 * no-overwrite mode the writer does not touch it before it is consumed.
 * In overwrite mode the writer may reuse the slot at any time: copy the
 * data out, issue a read barrier, and keep the copy only if the slot's
 * @seq is still the same; a sequence number whose slot holds a later one
 * was overwritten.
 */
struct relay_meta_slot {
	__u64 seq;
	__u32 header;
	__u32 padding;
	__u64 lost_before;
};

/**
 * struct relay_consume - release sub-buffers to the writer
 * @seq: in: sequence number of the first sub-buffer released: the
 *	consumed count
 * @count: in: number of sub-buffers released, from @seq on, up to the
 *	produced count; with 0, @seq is ignored and only @consumed is
 *	returned
 * @lost: out: how many of them the writer reused before this call
 *	(overwrite mode); a reader that did not check their slots after
 *	copying them must discard their data
 * @consumed: out: the consumed count after the call
 *
 * Fails with EINVAL if the range does not start at the consumed count or
 * goes beyond the ready sub-buffers.
 */
struct relay_consume {
	__u64 seq;
	__u64 count;
	__u64 lost;
	__u64 consumed;
};

#define RELAY_IOC_MAGIC		0xB9

#define RELAY_IOC_GET_INFO	_IOR(RELAY_IOC_MAGIC, 0x00, struct relay_buf_info)
#define RELAY_IOC_CONSUME	_IOWR(RELAY_IOC_MAGIC, 0x01, struct relay_consume)
/* Close the partly filled sub-buffer so that it becomes ready. */
#define RELAY_IOC_FLUSH		_IO(RELAY_IOC_MAGIC, 0x02)

#endif /* _UAPI_LINUX_RELAY_H */
