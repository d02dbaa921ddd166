// SPDX-License-Identifier: GPL-2.0
/*
 * relay_kleak - the kleak example: every kmalloc() and kfree() as a
 * binary record in a relay channel, for finding leaks afterwards
 *
 * The records come from the kmem tracepoints "kmalloc" and "kfree",
 * which mm/slab_common.c exports to modules (EXPORT_TRACEPOINT_SYMBOL,
 * on 6.12 and 7.3 alike).  They fire in every kmalloc variant, the large
 * ones included, after the allocation, with the caller's address, the
 * bytes requested and the bytes the allocator handed out, which is all a
 * leak report needs.  kprobes or kretprobes on the allocator would have
 * to know its internal functions, which change between versions
 * (__kmalloc_noprof, __kmalloc_cache_noprof, __kmalloc_large_noprof,
 * ...), to catch the pointer on return and the caller two frames up, at
 * a far higher cost per call.  Objects freed without kfree() are not
 * seen: kmem_cache_free() of a kmalloc object, kfree_bulk() (which
 * kfree_rcu() batches use); they look outstanding.
 *
 * The channel is /sys/kernel/debug/relay_kleak/cpu0 .. cpuN-1 (relay_app);
 * writing 1 to /sys/kernel/debug/relay_kleak/trace starts recording, 0
 * stops it (and waits for records in flight).  Every record is a struct
 * relay_kleak_rec; seq orders them across CPUs: a kmalloc record's seq is
 * taken after the allocation, a kfree record's before the memory is
 * freed, so an object's kfree always has a higher seq than its kmalloc.
 * A seq missing from the recording is a record the channel refused
 * (relay_app "dropped").
 */

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/tracepoint.h>
#include <trace/events/kmem.h>

#include "relay_app.h"

static ulong subbuf_size = 262144;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 262144)");

static ulong n_subbufs = 16;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 16)");

enum relay_kleak_type {
	RELAY_KLEAK_KMALLOC = 1,
	RELAY_KLEAK_KFREE = 2,
};

/**
 * struct relay_kleak_rec - one kmalloc() or kfree(), 40 bytes in native
 *	byte order
 * @seq: order of the call among all records, from 0 at module load
 * @ptr: the object
 * @call_site: address the allocator or kfree() was called from
 * @bytes_req: bytes asked for (kmalloc)
 * @bytes_alloc: bytes handed out (kmalloc)
 * @type: enum relay_kleak_type
 * @reserved: zero
 */
struct relay_kleak_rec {
	u64 seq;
	u64 ptr;
	u64 call_site;
	u32 bytes_req;
	u32 bytes_alloc;
	u32 type;
	u32 reserved;
};

static_assert(sizeof(struct relay_kleak_rec) == 40);

static atomic64_t relay_kleak_seq = ATOMIC64_INIT(0);
static DEFINE_MUTEX(relay_kleak_mutex);	/* serialises trace on and off */
static bool relay_kleak_tracing;
static struct relay_app *relay_kleak_app;
static struct dentry *relay_kleak_trace;

static void relay_kleak_log(enum relay_kleak_type type, unsigned long site,
			    const void *ptr, size_t req, size_t alloc)
{
	struct relay_kleak_rec rec = {
		.seq		= atomic64_inc_return(&relay_kleak_seq) - 1,
		.ptr		= (unsigned long)ptr,
		.call_site	= site,
		.bytes_req	= min_t(size_t, req, U32_MAX),
		.bytes_alloc	= min_t(size_t, alloc, U32_MAX),
		.type		= type,
	};

	relay_app_write(relay_kleak_app, &rec, sizeof(rec));
}

static void relay_kleak_kmalloc(void *data, unsigned long call_site,
				const void *ptr, size_t bytes_req,
				size_t bytes_alloc, gfp_t gfp_flags, int node)
{
	if (!ZERO_OR_NULL_PTR(ptr))
		relay_kleak_log(RELAY_KLEAK_KMALLOC, call_site, ptr, bytes_req,
				bytes_alloc);
}

static void relay_kleak_kfree(void *data, unsigned long call_site,
			      const void *ptr)
{
	if (!ZERO_OR_NULL_PTR(ptr))
		relay_kleak_log(RELAY_KLEAK_KFREE, call_site, ptr, 0, 0);
}

static int relay_kleak_start(void)
{
	int ret;

	ret = register_trace_kmalloc(relay_kleak_kmalloc, NULL);
	if (ret)
		return ret;
	ret = register_trace_kfree(relay_kleak_kfree, NULL);
	if (ret) {
		unregister_trace_kmalloc(relay_kleak_kmalloc, NULL);
		tracepoint_synchronize_unregister();
	}
	return ret;
}

static void relay_kleak_stop(void)
{
	unregister_trace_kfree(relay_kleak_kfree, NULL);
	unregister_trace_kmalloc(relay_kleak_kmalloc, NULL);
	/* No probe runs after this. */
	tracepoint_synchronize_unregister();
}

static int relay_kleak_trace_get(void *data, u64 *val)
{
	*val = READ_ONCE(relay_kleak_tracing);
	return 0;
}

static int relay_kleak_trace_set(void *data, u64 val)
{
	int ret = 0;

	mutex_lock(&relay_kleak_mutex);
	if (val && !relay_kleak_tracing)
		ret = relay_kleak_start();
	else if (!val && relay_kleak_tracing)
		relay_kleak_stop();
	if (!ret)
		WRITE_ONCE(relay_kleak_tracing, !!val);
	mutex_unlock(&relay_kleak_mutex);
	return ret;
}
DEFINE_DEBUGFS_ATTRIBUTE(relay_kleak_trace_fops, relay_kleak_trace_get,
			 relay_kleak_trace_set, "%llu\n");

static int __init relay_kleak_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
	};

	relay_kleak_app = relay_app_create("relay_kleak", NULL, &params);
	if (IS_ERR(relay_kleak_app))
		return PTR_ERR(relay_kleak_app);
	relay_kleak_trace =
		debugfs_create_file_unsafe("trace", 0600,
					   relay_app_dir(relay_kleak_app), NULL,
					   &relay_kleak_trace_fops);
	return 0;
}
module_init(relay_kleak_init);

static void __exit relay_kleak_exit(void)
{
	debugfs_remove(relay_kleak_trace);
	relay_kleak_trace_set(NULL, 0);
	relay_app_destroy(relay_kleak_app);
}
module_exit(relay_kleak_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay kleak example: kmalloc and kfree records for leak reports");
