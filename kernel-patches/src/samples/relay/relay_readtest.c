// SPDX-License-Identifier: GPL-2.0
/*
 * relay_readtest - the readtest example: a stress producer of numbered
 * events, for checking that a reader accounts for every one of them
 *
 * The channel is a relay_app channel in /sys/kernel/debug/relay_readtest/
 * whose directory holds relay_app's files (cpuN buffers, subbuf_size,
 * n_subbufs, overwrite, create, enabled, dropped, cpuN.produced,
 * cpuN.consumed) and the test's own:
 *
 *   event_n           events each online CPU writes per test (rw)
 *   event_size        bytes per event, 16 or more (rw)
 *   start_test        writing 1 starts a test: every online CPU writes
 *                     event_n events from a work item bound to it, as fast
 *                     as it can; returns at once (-EBUSY while one runs)
 *   test_done         1 when no test is running
 *   write_count       events the last test offered to the channel
 *   write_byte_count  their bytes
 *
 * Every event starts with struct relay_readtest_event (CPU, size,
 * sequence number from 0 per CPU and test); the rest of its bytes are the
 * low byte of the sequence number.  A reader proves read + lost ==
 * write_count: in no-overwrite mode what it lost are the writes the full
 * buffer refused ("dropped"), in overwrite mode the events of the
 * sub-buffers the writer overwrote; sequence gaps show both.  Set
 * overwrite and geometry first, then write 1 to create to apply them.
 */

#include <linux/atomic.h>
#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "relay_app.h"

static ulong subbuf_size = 16384;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 16384)");

static ulong n_subbufs = 4;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 4)");

#define RELAY_READTEST_MAX_EVENT	65536

/* Header of every event, in native byte order. */
struct relay_readtest_event {
	u32 cpu;
	u32 size;
	u64 seq;
};

struct relay_readtest_work {
	struct work_struct work;
	unsigned int cpu;
	u64 written;
	u64 bytes;
};

static DEFINE_PER_CPU(struct relay_readtest_work, relay_readtest_works);
static DEFINE_MUTEX(relay_readtest_mutex);	/* settings, starting */
static atomic_t relay_readtest_running = ATOMIC_INIT(0);
static u32 relay_readtest_event_n = 10000;
static u32 relay_readtest_event_size = 64;
static struct relay_app *relay_readtest_app;
static struct dentry *relay_readtest_files[6];

static void relay_readtest_work_fn(struct work_struct *work)
{
	struct relay_readtest_work *w =
		container_of(work, struct relay_readtest_work, work);
	u32 size = relay_readtest_event_size, n = relay_readtest_event_n;
	struct relay_readtest_event *ev;
	u64 seq;

	ev = kmalloc(size, GFP_KERNEL);
	if (ev) {
		ev->cpu = w->cpu;
		ev->size = size;
		for (seq = 0; seq < n; seq++) {
			ev->seq = seq;
			memset(ev + 1, (u8)seq, size - sizeof(*ev));
			/* Refused events show in relay_app's "dropped". */
			relay_app_write(relay_readtest_app, ev, size);
			WRITE_ONCE(w->written, w->written + 1);
			WRITE_ONCE(w->bytes, w->bytes + size);
			cond_resched();
		}
		kfree(ev);
	}
	atomic_dec(&relay_readtest_running);
}

static int relay_readtest_start(void *data, u64 val)
{
	struct relay_readtest_work *w;
	unsigned int cpu;
	int ret = 0;

	if (val != 1)
		return -EINVAL;

	mutex_lock(&relay_readtest_mutex);
	if (atomic_read(&relay_readtest_running)) {
		ret = -EBUSY;
		goto out;
	}
	cpus_read_lock();
	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&relay_readtest_works, cpu);
		WRITE_ONCE(w->written, 0);
		WRITE_ONCE(w->bytes, 0);
	}
	for_each_online_cpu(cpu) {
		w = per_cpu_ptr(&relay_readtest_works, cpu);
		w->cpu = cpu;
		atomic_inc(&relay_readtest_running);
		schedule_work_on(cpu, &w->work);
	}
	cpus_read_unlock();
out:
	mutex_unlock(&relay_readtest_mutex);
	return ret;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_start_fops, NULL,
			 relay_readtest_start, "%llu\n");

static int relay_readtest_set(u32 *setting, u64 val, u64 min, u64 max)
{
	int ret = 0;

	if (val < min || val > max)
		return -EINVAL;
	mutex_lock(&relay_readtest_mutex);
	if (atomic_read(&relay_readtest_running))
		ret = -EBUSY;
	else
		*setting = val;
	mutex_unlock(&relay_readtest_mutex);
	return ret;
}

static int relay_readtest_event_n_get(void *data, u64 *val)
{
	*val = relay_readtest_event_n;
	return 0;
}

static int relay_readtest_event_n_set(void *data, u64 val)
{
	return relay_readtest_set(&relay_readtest_event_n, val, 0, U32_MAX);
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_event_n_fops,
			 relay_readtest_event_n_get,
			 relay_readtest_event_n_set, "%llu\n");

static int relay_readtest_event_size_get(void *data, u64 *val)
{
	*val = relay_readtest_event_size;
	return 0;
}

static int relay_readtest_event_size_set(void *data, u64 val)
{
	return relay_readtest_set(&relay_readtest_event_size, val,
				  sizeof(struct relay_readtest_event),
				  RELAY_READTEST_MAX_EVENT);
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_event_size_fops,
			 relay_readtest_event_size_get,
			 relay_readtest_event_size_set, "%llu\n");

static int relay_readtest_done_get(void *data, u64 *val)
{
	*val = !atomic_read(&relay_readtest_running);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_done_fops, relay_readtest_done_get,
			 NULL, "%llu\n");

static u64 relay_readtest_sum(bool bytes)
{
	struct relay_readtest_work *w;
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu) {
		w = per_cpu_ptr(&relay_readtest_works, cpu);
		sum += bytes ? READ_ONCE(w->bytes) : READ_ONCE(w->written);
	}
	return sum;
}

static int relay_readtest_count_get(void *data, u64 *val)
{
	*val = relay_readtest_sum(false);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_count_fops, relay_readtest_count_get,
			 NULL, "%llu\n");

static int relay_readtest_bytes_get(void *data, u64 *val)
{
	*val = relay_readtest_sum(true);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_readtest_bytes_fops, relay_readtest_bytes_get,
			 NULL, "%llu\n");

static int __init relay_readtest_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
	};
	struct dentry *dir;
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		INIT_WORK(&per_cpu_ptr(&relay_readtest_works, cpu)->work,
			  relay_readtest_work_fn);

	relay_readtest_app = relay_app_create("relay_readtest", NULL, &params);
	if (IS_ERR(relay_readtest_app))
		return PTR_ERR(relay_readtest_app);

	dir = relay_app_dir(relay_readtest_app);
	relay_readtest_files[0] =
		debugfs_create_file_unsafe("event_n", 0600, dir, NULL,
					   &relay_readtest_event_n_fops);
	relay_readtest_files[1] =
		debugfs_create_file_unsafe("event_size", 0600, dir, NULL,
					   &relay_readtest_event_size_fops);
	relay_readtest_files[2] =
		debugfs_create_file_unsafe("start_test", 0200, dir, NULL,
					   &relay_readtest_start_fops);
	relay_readtest_files[3] =
		debugfs_create_file_unsafe("test_done", 0400, dir, NULL,
					   &relay_readtest_done_fops);
	relay_readtest_files[4] =
		debugfs_create_file_unsafe("write_count", 0400, dir, NULL,
					   &relay_readtest_count_fops);
	relay_readtest_files[5] =
		debugfs_create_file_unsafe("write_byte_count", 0400, dir, NULL,
					   &relay_readtest_bytes_fops);
	return 0;
}
module_init(relay_readtest_init);

static void __exit relay_readtest_exit(void)
{
	unsigned int cpu;
	int i;

	/* Waits for handlers in progress; then no test can start. */
	for (i = 0; i < ARRAY_SIZE(relay_readtest_files); i++)
		debugfs_remove(relay_readtest_files[i]);
	for_each_possible_cpu(cpu)
		flush_work(&per_cpu_ptr(&relay_readtest_works, cpu)->work);
	relay_app_destroy(relay_readtest_app);
}
module_exit(relay_readtest_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay readtest example: numbered events for loss accounting");
