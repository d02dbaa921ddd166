// SPDX-License-Identifier: GPL-2.0
/*
 * relay_reserve - the reserve example: records reserved in a relay buffer
 * and filled in place later, with a count of the bytes actually written
 * kept in every sub-buffer so that readers never take a reserved slot
 * before it was filled
 *
 * /sys/kernel/debug/relay_reserve/ holds a committed relay_app channel
 * (buffers cpu0 .. cpuN-1 and the relay_app control files) and:
 *
 *   write   each write(2) of 1 to 4096 bytes becomes one record: room is
 *           reserved in the writer's CPU buffer, then the bytes are copied
 *           from user space straight into it (no bounce buffer; the copy
 *           may fault and sleep, so it cannot happen with interrupts off)
 *           and the record is committed
 *   stall   writing 1 makes the next write(2) keep its room reserved but
 *           unfilled until 0 is written here; reads 1 until then
 *   held    1 while a write(2) waits with an unfilled reservation
 *
 * Records are a u32 length (native byte order) followed by that many
 * bytes, back to back; a length with bit 31 set marks a record whose
 * copy from user space failed: its bytes are zero and it is not data.
 *
 * Meanwhile other writers go on reserving after it and may close the
 * sub-buffer, which relay then offers to readers.  Every sub-buffer's
 * data starts with a u32 that relay_app_commit() raises by each record's
 * size once the record is filled (relay_app's committed channels): a
 * reader takes a sub-buffer only when that count equals the length of
 * its data after the count, and waits otherwise.  The channel is
 * no-overwrite, so the writer cannot reuse a sub-buffer before the reader
 * released it.
 */

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "relay_app.h"

static ulong subbuf_size = 16384;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes, a multiple of 4 (default 16384)");

static ulong n_subbufs = 8;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 8)");

#define RELAY_RESERVE_MAX_RECORD	4096
#define RELAY_RESERVE_DISCARDED		BIT(31)

enum {
	RELAY_RESERVE_IDLE,
	RELAY_RESERVE_ARMED,	/* the next write(2) will hold its room */
	RELAY_RESERVE_HELD,	/* a write(2) holds its room unfilled */
};

static atomic_t relay_reserve_stall = ATOMIC_INIT(RELAY_RESERVE_IDLE);
static DECLARE_WAIT_QUEUE_HEAD(relay_reserve_wq);
static struct relay_app *relay_reserve_app;
static struct dentry *relay_reserve_files[3];

static ssize_t relay_reserve_write(struct file *file, const char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	struct relay_app_slot slot;
	u32 len = count;
	int ret;

	if (!count || count > RELAY_RESERVE_MAX_RECORD)
		return -EINVAL;

	ret = relay_app_reserve(relay_reserve_app, sizeof(len) + count, &slot);
	if (ret)
		return ret;

	if (atomic_cmpxchg(&relay_reserve_stall, RELAY_RESERVE_ARMED,
			   RELAY_RESERVE_HELD) == RELAY_RESERVE_ARMED) {
		/* A signal ends the stall too. */
		wait_event_interruptible(relay_reserve_wq,
					 atomic_read(&relay_reserve_stall) !=
					 RELAY_RESERVE_HELD);
		atomic_cmpxchg(&relay_reserve_stall, RELAY_RESERVE_HELD,
			       RELAY_RESERVE_IDLE);
	}

	if (copy_from_user(slot.data + sizeof(len), ubuf, count)) {
		memset(slot.data + sizeof(len), 0, count);
		len |= RELAY_RESERVE_DISCARDED;
		ret = -EFAULT;
	}
	memcpy(slot.data, &len, sizeof(len));
	/* Even a discarded record is committed, or readers would wait. */
	relay_app_commit(relay_reserve_app, &slot);

	return ret ? ret : count;
}

static const struct file_operations relay_reserve_write_fops = {
	.owner	= THIS_MODULE,
	.write	= relay_reserve_write,
	.llseek	= noop_llseek,
};

static int relay_reserve_stall_get(void *data, u64 *val)
{
	*val = atomic_read(&relay_reserve_stall) != RELAY_RESERVE_IDLE;
	return 0;
}

static int relay_reserve_stall_set(void *data, u64 val)
{
	if (val) {
		if (atomic_cmpxchg(&relay_reserve_stall, RELAY_RESERVE_IDLE,
				   RELAY_RESERVE_ARMED) == RELAY_RESERVE_HELD)
			return -EBUSY;
		return 0;
	}
	atomic_set(&relay_reserve_stall, RELAY_RESERVE_IDLE);
	wake_up(&relay_reserve_wq);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_reserve_stall_fops, relay_reserve_stall_get,
			 relay_reserve_stall_set, "%llu\n");

static int relay_reserve_held_get(void *data, u64 *val)
{
	*val = atomic_read(&relay_reserve_stall) == RELAY_RESERVE_HELD;
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_reserve_held_fops, relay_reserve_held_get,
			 NULL, "%llu\n");

static int __init relay_reserve_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.committed	= true,
	};
	struct dentry *dir;

	relay_reserve_app = relay_app_create("relay_reserve", NULL, &params);
	if (IS_ERR(relay_reserve_app))
		return PTR_ERR(relay_reserve_app);

	dir = relay_app_dir(relay_reserve_app);
	relay_reserve_files[0] =
		debugfs_create_file_unsafe("stall", 0600, dir, NULL,
					   &relay_reserve_stall_fops);
	relay_reserve_files[1] =
		debugfs_create_file_unsafe("held", 0400, dir, NULL,
					   &relay_reserve_held_fops);
	relay_reserve_files[2] =
		debugfs_create_file("write", 0200, dir, NULL,
				    &relay_reserve_write_fops);
	return 0;
}
module_init(relay_reserve_init);

static void __exit relay_reserve_exit(void)
{
	/* No new stall, then release a held writer and wait for writers. */
	debugfs_remove(relay_reserve_files[0]);
	relay_reserve_stall_set(NULL, 0);
	debugfs_remove(relay_reserve_files[2]);
	debugfs_remove(relay_reserve_files[1]);
	relay_app_destroy(relay_reserve_app);
}
module_exit(relay_reserve_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay reserve example: records filled in place, with committed counts");
