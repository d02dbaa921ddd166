// SPDX-License-Identifier: GPL-2.0
/*
 * Tests the relay user ABI (<linux/relay.h>, Documentation/userspace-api/
 * relay.rst) on the buffer files of the test_relay module: GET_INFO, the
 * meta area and the mappings a buffer file accepts, argument checking,
 * draining through the meta area with one CONSUME per drain, loss
 * accounting without and with overwrite, read(2) of the sub-buffer being
 * written, and a buffer that outlives its channel.
 *
 * relay_mmap.sh loads test_relay with each channel configuration in turn;
 * the tests read the module's parameters to know what to expect.
 * finalized_after_unload removes the module: run it last, alone
 * (-t finalized_after_unload).
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/relay.h>

#include "../kselftest_harness.h"

#define TEST_RELAY_DIR	"/sys/kernel/debug/test_relay"
#define PARAMS		"/sys/module/test_relay/parameters"

/* As lib/test_relay.c writes it. */
#define TEST_RELAY_MAGIC	0x52544c52
struct test_relay_record {
	__u32 magic;
	__u32 cpu;
	__u64 seq;
};

#define HDR_SIZE	4	/* test_relay's header word, header=1 */

static unsigned long param(const char *name)
{
	char path[128], buf[32] = "";
	int fd;

	snprintf(path, sizeof(path), PARAMS "/%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	/* bool parameters read as Y or N */
	if (buf[0] == 'Y')
		return 1;
	return strtoul(buf, NULL, 0);
}

static int emit_records(unsigned long count)
{
	char buf[32];
	int fd, len, ret;

	fd = open(TEST_RELAY_DIR "/emit", O_WRONLY);
	if (fd < 0)
		return -1;
	len = snprintf(buf, sizeof(buf), "%lu", count);
	ret = write(fd, buf, len) == len ? 0 : -1;
	close(fd);
	return ret;
}

/*
 * A 64-bit field of the meta area as two 32-bit loads: a 32-bit kernel
 * stores it so, and an 8-byte atomic load can be a locked cmpxchg on
 * 32-bit x86, which faults on a read-only mapping.  Consistent where the
 * writer is done with the field or it is read under seq_lock.
 */
static __u64 load_u64(const __u64 *p)
{
	const __u32 *half = (const __u32 *)p;
	union {
		__u32 h[2];
		__u64 v;
	} u;

	u.h[0] = __atomic_load_n(&half[0], __ATOMIC_RELAXED);
	u.h[1] = __atomic_load_n(&half[1], __ATOMIC_RELAXED);
	return u.v;
}

struct counters {
	__u64 produced, consumed, lost_full, lost_toobig, lost_overwritten;
	__u32 flags;
};

/* The reader's side of the sequence count in <linux/relay.h>. */
static struct counters read_counters(const struct relay_meta *meta)
{
	struct counters c;
	__u32 seq;

	c.flags = __atomic_load_n(&meta->flags, __ATOMIC_ACQUIRE);
	for (;;) {
		seq = __atomic_load_n(&meta->seq_lock, __ATOMIC_ACQUIRE);
		if (seq & 1)
			continue;
		c.produced = load_u64(&meta->produced);
		c.lost_full = load_u64(&meta->lost_full);
		c.lost_toobig = load_u64(&meta->lost_toobig);
		c.lost_overwritten = load_u64(&meta->lost_overwritten);
		/* Pairs with the writer's barrier before it ends the update. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&meta->seq_lock, __ATOMIC_RELAXED) == seq)
			break;
	}
	c.consumed = load_u64(&meta->consumed);
	return c;
}

/* Buffer cpu0, mapped with its meta area, and what test_relay writes. */
struct reader {
	int fd;
	struct relay_buf_info info;
	char *map;
	const struct relay_meta *meta;
	unsigned long ncpus;	/* CPUs writing into this buffer */
	bool global, overwrite, header;
	size_t hdr;		/* header bytes per sub-buffer */
	size_t per_subbuf;	/* records in a full sub-buffer */
};

FIXTURE(relay) {
	struct reader r;
};

FIXTURE_SETUP(relay)
{
	self->r.fd = open(TEST_RELAY_DIR "/cpu0", O_RDONLY);
	if (self->r.fd < 0)
		SKIP(return, "no " TEST_RELAY_DIR "/cpu0: load test_relay first");
	ASSERT_EQ(sizeof(self->r.info),
		  ioctl(self->r.fd, RELAY_IOC_GET_INFO, &self->r.info));
	self->r.map = mmap(NULL, self->r.info.mmap_len + self->r.info.meta_len,
			   PROT_READ, MAP_SHARED, self->r.fd, 0);
	ASSERT_NE(MAP_FAILED, self->r.map);
	self->r.meta = (const void *)(self->r.map + self->r.info.mmap_len);
	self->r.overwrite = param("overwrite");
	self->r.header = param("header");
	self->r.hdr = self->r.header ? HDR_SIZE : 0;
	self->r.global = param("global");
	self->r.ncpus = self->r.global ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
	self->r.per_subbuf = (self->r.info.subbuf_size - self->r.hdr) /
			   sizeof(struct test_relay_record);
}

FIXTURE_TEARDOWN(relay)
{
	if (self->r.map && self->r.map != MAP_FAILED)
		munmap(self->r.map, self->r.info.mmap_len + self->r.info.meta_len);
	if (self->r.fd >= 0)
		close(self->r.fd);
}

static const struct relay_meta_slot *slot_of(const struct relay_meta *meta,
					     __u64 seq)
{
	return (const void *)((const char *)meta + meta->slots_offset +
			      (seq % meta->n_subbufs) * meta->slot_len);
}

struct drained {
	__u64 records, missing, bad, subbufs, stale, lost_before, consumes;
	__u64 next_seq;		/* the record number expected next */
	bool started;
};

/* Checks the records of one sub-buffer: well-formed, numbered in order. */
static void check_records(struct drained *d, const char *data, size_t len,
			  bool global, bool *gap_inside)
{
	const struct test_relay_record *r = (const void *)data;
	size_t i, n = len / sizeof(*r);

	if (len % sizeof(*r))
		d->bad++;
	for (i = 0; i < n; i++) {
		if (r[i].magic != TEST_RELAY_MAGIC || (!global && r[i].cpu) ||
		    (d->started && r[i].seq < d->next_seq)) {
			d->bad++;
			continue;
		}
		if (d->started && r[i].seq > d->next_seq) {
			d->missing += r[i].seq - d->next_seq;
			if (i)
				*gap_inside = true;
		}
		d->started = true;
		d->next_seq = r[i].seq + 1;
		d->records++;
	}
}

/*
 * Reads every ready sub-buffer through the meta area (copied out, and in
 * overwrite mode kept only if the slot still holds it after the copy),
 * then releases them all with one CONSUME.
 */
static void drain(struct __test_metadata *_metadata, struct reader *r,
		  struct drained *d, bool *gap_inside)
{
	const struct relay_buf_info *info = &r->info;
	struct counters c = read_counters(r->meta);
	const struct relay_meta_slot *slot;
	struct relay_consume cons;
	__u64 seq, first = c.consumed;
	size_t off, len, padding, hdr;
	char *copy = malloc(info->subbuf_size);
	struct test_relay_record rec;
	__u32 word;

	ASSERT_NE(NULL, copy);
	if (r->overwrite && c.produced >= info->n_subbufs &&
	    c.produced - info->n_subbufs + 1 > first)
		first = c.produced - info->n_subbufs + 1;
	for (seq = first; seq < c.produced; seq++) {
		slot = slot_of(r->meta, seq);
		if (load_u64(&slot->seq) != seq) {
			d->stale++;
			continue;
		}
		hdr = __atomic_load_n(&slot->header, __ATOMIC_RELAXED);
		padding = __atomic_load_n(&slot->padding, __ATOMIC_RELAXED);
		EXPECT_EQ(r->hdr, hdr);
		ASSERT_LE(hdr + padding, info->subbuf_size);
		off = (seq % info->n_subbufs) * info->subbuf_size;
		len = info->subbuf_size - hdr - padding;
		memcpy(copy, r->map + off + hdr, len);
		memcpy(&word, r->map + off, sizeof(word));
		/* Pairs with the writer's full barrier after it claims a slot. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (load_u64(&slot->seq) != seq) {
			d->stale++;
			continue;
		}
		if (r->header)
			EXPECT_EQ(padding, word);
		d->lost_before += load_u64(&slot->lost_before);
		/* Without overwrite, writes dropped right before it. */
		if (!r->overwrite && d->started && len >= sizeof(rec)) {
			memcpy(&rec, copy, sizeof(rec));
			EXPECT_EQ(rec.seq - d->next_seq,
				  load_u64(&slot->lost_before));
		}
		check_records(d, copy, len, r->global, gap_inside);
		d->subbufs++;
	}
	free(copy);
	if (c.produced > c.consumed) {
		memset(&cons, 0, sizeof(cons));
		cons.seq = c.consumed;
		cons.count = c.produced - c.consumed;
		ASSERT_EQ(sizeof(cons), ioctl(r->fd, RELAY_IOC_CONSUME, &cons));
		EXPECT_EQ(c.produced, cons.consumed);
		d->consumes++;
	}
}

TEST_F(relay, get_info)
{
	size_t ring = param("subbuf_size") * param("n_subbufs");
	long page = sysconf(_SC_PAGESIZE);

	EXPECT_EQ(param("subbuf_size"), self->r.info.subbuf_size);
	EXPECT_EQ(param("n_subbufs"), self->r.info.n_subbufs);
	EXPECT_EQ((ring + page - 1) / page * page, self->r.info.mmap_len);
	EXPECT_NE(0, self->r.info.meta_len);
	EXPECT_EQ(0, self->r.info.meta_len % page);
	EXPECT_EQ(0, self->r.info.cpu);
	EXPECT_EQ(self->r.global, !!(self->r.info.flags & RELAY_BUF_GLOBAL));
	EXPECT_EQ(self->r.overwrite, !!(self->r.info.flags & RELAY_BUF_OVERWRITE));
	EXPECT_EQ(0, self->r.info.flags & RELAY_BUF_FINALIZED);
}

TEST_F(relay, meta_describes_itself)
{
	const struct relay_meta *m = self->r.meta;

	EXPECT_EQ(RELAY_META_VERSION, m->version);
	EXPECT_LE(sizeof(*m), m->meta_struct_len);
	EXPECT_EQ(self->r.info.meta_len, m->meta_len);
	EXPECT_EQ(self->r.info.subbuf_size, m->subbuf_size);
	EXPECT_EQ(self->r.info.n_subbufs, m->n_subbufs);
	EXPECT_EQ(0, m->cpu);
	EXPECT_LE(sizeof(struct relay_meta_slot), m->slot_len);
	EXPECT_LE(m->meta_struct_len, m->slots_offset);
	EXPECT_LE(m->slots_offset + m->n_subbufs * m->slot_len, m->meta_len);
	EXPECT_TRUE(m->caps & RELAY_META_CAP_FLUSH);
}

static int map_errno(int fd, size_t len, off_t off, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, off);

	if (p == MAP_FAILED)
		return errno;
	munmap(p, len);
	return 0;
}

TEST_F(relay, mappings)
{
	size_t ring = self->r.info.mmap_len, meta = self->r.info.meta_len;
	long page = sysconf(_SC_PAGESIZE);
	int rw;

	EXPECT_EQ(0, map_errno(self->r.fd, ring, 0, PROT_READ));
	EXPECT_EQ(0, map_errno(self->r.fd, meta, ring, PROT_READ));
	EXPECT_EQ(EINVAL, map_errno(self->r.fd, ring - page, 0, PROT_READ));
	EXPECT_EQ(EINVAL, map_errno(self->r.fd, ring + meta + page, 0, PROT_READ));
	EXPECT_EQ(EINVAL, map_errno(self->r.fd, page, page, PROT_READ));
	EXPECT_EQ(EINVAL, map_errno(self->r.fd, meta, ring + page, PROT_READ));
	EXPECT_EQ(EACCES, map_errno(self->r.fd, ring, 0, PROT_READ | PROT_WRITE));
	rw = open(TEST_RELAY_DIR "/cpu0", O_RDWR);
	if (rw >= 0) {
		EXPECT_EQ(EPERM, map_errno(rw, ring, 0, PROT_READ | PROT_WRITE));
		close(rw);
	}
}

TEST_F(relay, bad_arguments)
{
	struct relay_consume cons = { 0 };
	struct counters c = read_counters(self->r.meta);
	unsigned long wrong_dir, too_short;

	errno = 0;
	EXPECT_EQ(-1, ioctl(self->r.fd, _IOR(RELAY_IOC_MAGIC, 0x3f, __u64), &cons));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->r.fd, _IOR(0xB8, 0, struct relay_buf_info),
			    &self->r.info));
	EXPECT_EQ(ENOTTY, errno);
	wrong_dir = _IOW(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_GET_INFO),
			 struct relay_buf_info);
	EXPECT_EQ(-1, ioctl(self->r.fd, wrong_dir, &self->r.info));
	EXPECT_EQ(ENOTTY, errno);
	too_short = _IOR(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_GET_INFO), __u32);
	EXPECT_EQ(-1, ioctl(self->r.fd, too_short, &cons));
	EXPECT_EQ(EINVAL, errno);

	cons.seq = c.consumed + 1;
	cons.count = 1;
	EXPECT_EQ(-1, ioctl(self->r.fd, RELAY_IOC_CONSUME, &cons));
	EXPECT_EQ(EINVAL, errno);
	cons.seq = c.consumed;
	cons.count = c.produced - c.consumed + 1;
	EXPECT_EQ(-1, ioctl(self->r.fd, RELAY_IOC_CONSUME, &cons));
	EXPECT_EQ(EINVAL, errno);
	cons.count = ~0ULL;
	EXPECT_EQ(-1, ioctl(self->r.fd, RELAY_IOC_CONSUME, &cons));
	EXPECT_EQ(EINVAL, errno);
	/* Nothing to consume: returns the consumed count. */
	cons.count = 0;
	EXPECT_EQ(sizeof(cons), ioctl(self->r.fd, RELAY_IOC_CONSUME, &cons));
	EXPECT_EQ(c.consumed, cons.consumed);
}

/*
 * Empties the buffer through a marker record per writer, so that a test
 * starts with a fresh sub-buffer and knows the number of the next record
 * (@d counts from there).
 */
static void start(struct __test_metadata *_metadata, struct reader *r,
		  struct drained *d)
{
	bool gap = false;

	ASSERT_EQ(0, emit_records(1));
	ASSERT_EQ(0, ioctl(r->fd, RELAY_IOC_FLUSH));
	memset(d, 0, sizeof(*d));
	drain(_metadata, r, d, &gap);
	ASSERT_TRUE(d->started);
	*d = (struct drained){ .started = true, .next_seq = d->next_seq };
}

TEST_F(relay, records_in_order_without_loss)
{
	struct drained d = { 0 };
	struct counters before, after;
	unsigned long n;
	bool gap = false;

	if (self->r.overwrite)
		SKIP(return, "overwrite mode: see overwritten_subbufs_counted");
	start(_metadata, &self->r, &d);
	before = read_counters(self->r.meta);
	/* What fits into all but one sub-buffer: nothing is dropped. */
	n = (self->r.info.n_subbufs - 1) * self->r.per_subbuf / self->r.ncpus;
	ASSERT_LT(0, n);
	ASSERT_EQ(0, emit_records(n));
	ASSERT_EQ(0, ioctl(self->r.fd, RELAY_IOC_FLUSH));
	drain(_metadata, &self->r, &d, &gap);
	after = read_counters(self->r.meta);

	EXPECT_EQ(0, d.bad);
	EXPECT_EQ(0, d.stale);
	EXPECT_EQ(0, d.missing);
	EXPECT_EQ(n * self->r.ncpus, d.records);
	EXPECT_EQ(before.lost_full, after.lost_full);
	EXPECT_EQ(after.produced, after.consumed);
	EXPECT_EQ(1, d.consumes);
}

TEST_F(relay, full_buffer_losses_counted)
{
	struct drained d = { 0 };
	struct counters before, after;
	unsigned long n, last;
	bool gap = false;

	if (self->r.overwrite)
		SKIP(return, "overwrite mode drops no write");
	start(_metadata, &self->r, &d);
	before = read_counters(self->r.meta);
	/* Twice what the buffer holds, and no reader meanwhile. */
	n = 2 * self->r.info.n_subbufs * self->r.per_subbuf / self->r.ncpus;
	ASSERT_EQ(0, emit_records(n));
	after = read_counters(self->r.meta);
	EXPECT_LT(before.lost_full, after.lost_full);
	drain(_metadata, &self->r, &d, &gap);
	/*
	 * The writes dropped are before the next sub-buffer (drain() checks
	 * each sub-buffer's lost_before against the gap before it).
	 */
	last = self->r.per_subbuf / self->r.ncpus ?: 1;
	ASSERT_EQ(0, emit_records(last));
	ASSERT_EQ(0, ioctl(self->r.fd, RELAY_IOC_FLUSH));
	drain(_metadata, &self->r, &d, &gap);

	EXPECT_EQ(0, d.bad);
	EXPECT_FALSE(gap);
	/* Every record missing is a write the full buffer refused. */
	EXPECT_EQ(after.lost_full - before.lost_full, d.missing);
	EXPECT_EQ(d.missing, d.lost_before);
	EXPECT_EQ((n + last) * self->r.ncpus, d.records + d.missing);
}

TEST_F(relay, overwritten_subbufs_counted)
{
	struct drained d = { 0 };
	struct counters before, after;
	unsigned long n;
	bool gap = false;

	if (!self->r.overwrite)
		SKIP(return, "not in overwrite mode");
	start(_metadata, &self->r, &d);
	before = read_counters(self->r.meta);
	/* Four rings' worth: the writer laps the idle reader. */
	n = 4 * self->r.info.n_subbufs * self->r.per_subbuf / self->r.ncpus;
	ASSERT_EQ(0, emit_records(n));
	ASSERT_EQ(0, ioctl(self->r.fd, RELAY_IOC_FLUSH));
	drain(_metadata, &self->r, &d, &gap);
	after = read_counters(self->r.meta);

	EXPECT_EQ(0, d.bad);
	/* Records go missing only in whole, overwritten sub-buffers. */
	EXPECT_FALSE(gap);
	EXPECT_LT(before.lost_overwritten, after.lost_overwritten);
	EXPECT_EQ((after.lost_overwritten - before.lost_overwritten) *
		  self->r.per_subbuf, d.missing);
	EXPECT_EQ(n * self->r.ncpus, d.records + d.missing);
	EXPECT_EQ(1, d.consumes);
}

/* read(2) returns the records of the sub-buffer being written (cat, btrace). */
TEST_F(relay, read_returns_committed_records)
{
	struct test_relay_record rec[64];
	struct drained d;
	ssize_t got;

	if (self->r.header)
		SKIP(return, "a sub-buffer with a header is read once finished");
	if (self->r.ncpus > 64 || self->r.per_subbuf < 2 * self->r.ncpus)
		SKIP(return, "more CPUs than the test reads records of");
	start(_metadata, &self->r, &d);
	ASSERT_EQ(0, emit_records(1));
	got = read(self->r.fd, rec, sizeof(rec));
	ASSERT_EQ(self->r.ncpus * sizeof(rec[0]), got);
	EXPECT_EQ(TEST_RELAY_MAGIC, rec[0].magic);
	EXPECT_EQ(d.next_seq, rec[0].seq);
}

/*
 * Removes test_relay while the buffer is mapped: the buffer lives on,
 * finalized, with the records of its last sub-buffer published although
 * the client did not flush.
 */
TEST_F(relay, finalized_after_unload)
{
	struct test_relay_record rec;
	struct counters c;
	struct drained d;
	__u64 seq;
	size_t off;
	char buf[64];

	start(_metadata, &self->r, &d);
	ASSERT_EQ(0, emit_records(1));
	c = read_counters(self->r.meta);
	seq = c.produced;
	ASSERT_EQ(0, system("rmmod test_relay"));

	ASSERT_EQ(sizeof(self->r.info),
		  ioctl(self->r.fd, RELAY_IOC_GET_INFO, &self->r.info));
	EXPECT_TRUE(self->r.info.flags & RELAY_BUF_FINALIZED);
	c = read_counters(self->r.meta);
	EXPECT_TRUE(c.flags & RELAY_BUF_FINALIZED);
	EXPECT_EQ(seq + 1, c.produced);
	EXPECT_EQ(seq, load_u64(&slot_of(self->r.meta, seq)->seq));
	off = (seq % self->r.info.n_subbufs) * self->r.info.subbuf_size + self->r.hdr;
	memcpy(&rec, self->r.map + off, sizeof(rec));
	EXPECT_EQ(TEST_RELAY_MAGIC, rec.magic);
	EXPECT_EQ(d.next_seq, rec.seq);
	EXPECT_EQ(0, ioctl(self->r.fd, RELAY_IOC_FLUSH));
	EXPECT_LE(0, read(self->r.fd, buf, sizeof(buf)));
}

TEST_HARNESS_MAIN
