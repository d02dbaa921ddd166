/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User ABI for readers of relay channel buffer files.
 *
 * A relay buffer is a ring of n_subbufs sub-buffers of subbuf_size bytes.
 * The writer fills sub-buffer (produced % n_subbufs); a sub-buffer is
 * "ready" once the writer has switched away from it.  Sub-buffers are
 * named by a 64-bit sequence number: the value of the produced counter
 * when the writer started it.  An mmap reader learns the geometry once,
 * then for each ready sub-buffer asks where its data lies
 * (RELAY_IOC_GET_SUBBUF) and releases it (RELAY_IOC_CONSUME): two
 * system calls per sub-buffer at most.
 *
 * Every structure may grow at its end.  The size user space passes is
 * the one encoded in the ioctl number (_IOC_SIZE): the kernel accepts any
 * size from the first published one up, copies out no more than user
 * space asked for, and requires input bytes it does not know to be zero.
 */
#ifndef _UAPI_LINUX_RELAY_H
#define _UAPI_LINUX_RELAY_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Buffer flags, in struct relay_buf_info and struct relay_buf_state. */
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
 */
struct relay_buf_info {
	__u64 subbuf_size;
	__u64 n_subbufs;
	__u64 mmap_len;
	__u32 cpu;
	__u32 flags;
};

/**
 * struct relay_buf_state - counters of a relay buffer
 * @produced: sub-buffers the writer has completed
 * @consumed: sub-buffers released by readers
 * @write_offset: bytes written into the sub-buffer being filled
 * @lost_full: writes dropped because every sub-buffer was unconsumed
 *	(no-overwrite mode)
 * @lost_toobig: writes dropped because they exceed one sub-buffer
 * @lost_overwritten: sub-buffers overwritten before they were consumed
 *	(overwrite mode)
 * @flags: RELAY_BUF_* flags
 * @reserved: must be zero
 *
 * Ready sub-buffers are the sequence numbers from @consumed up to
 * @produced - 1.  In overwrite mode the writer is filling the slot of
 * @produced - n_subbufs, so only those from @produced - n_subbufs + 1 on
 * are intact.
 */
struct relay_buf_state {
	__u64 produced;
	__u64 consumed;
	__u64 write_offset;
	__u64 lost_full;
	__u64 lost_toobig;
	__u64 lost_overwritten;
	__u32 flags;
	__u32 reserved;
};

/**
 * struct relay_subbuf - where the data of one ready sub-buffer lies
 * @seq: in: sequence number of a ready sub-buffer
 * @data_offset: out: offset of its first data byte in the mapping
 * @data_len: out: bytes of data, without padding or client header
 * @padding: out: unused bytes at the end of the sub-buffer
 *
 * Fails with EINVAL if @seq was already consumed, ENODATA if it is not
 * ready yet, and ESTALE if the writer has overwritten it (overwrite mode).
 */
struct relay_subbuf {
	__u64 seq;
	__u64 data_offset;
	__u64 data_len;
	__u64 padding;
};

/**
 * struct relay_consume - release sub-buffers to the writer
 * @seq: in: sequence number of the first sub-buffer released; must not
 *	be below the consumed count or at or above the produced count
 * @count: in: number of sub-buffers released, from @seq on
 * @lost: out: how many of them the writer overwrote (overwrite mode)
 *	while they were being read; their data must be discarded
 * @consumed: out: the consumed count after the call
 *
 * Fails with EINVAL if the range is not within the ready sub-buffers.
 */
struct relay_consume {
	__u64 seq;
	__u64 count;
	__u64 lost;
	__u64 consumed;
};

#define RELAY_IOC_MAGIC		0xB9

#define RELAY_IOC_GET_INFO	_IOR(RELAY_IOC_MAGIC, 0x00, struct relay_buf_info)
#define RELAY_IOC_GET_STATE	_IOR(RELAY_IOC_MAGIC, 0x01, struct relay_buf_state)
#define RELAY_IOC_GET_SUBBUF	_IOWR(RELAY_IOC_MAGIC, 0x02, struct relay_subbuf)
#define RELAY_IOC_CONSUME	_IOWR(RELAY_IOC_MAGIC, 0x03, struct relay_consume)
/* Close the partly filled sub-buffer so that it becomes ready. */
#define RELAY_IOC_FLUSH		_IO(RELAY_IOC_MAGIC, 0x04)

#endif /* _UAPI_LINUX_RELAY_H */
