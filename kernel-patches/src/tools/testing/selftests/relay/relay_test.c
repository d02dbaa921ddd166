// SPDX-License-Identifier: GPL-2.0
/*
 * Test of the relay buffer ioctls (<linux/relay.h>) against the relay_klog
 * and klog_gen sample modules.
 *
 *   relay_test [-d DIR] [-c CPU] [-n N] [-l]
 *	opens DIR/cpuCPU (default /sys/kernel/debug/relay_klog/cpu0), maps
 *	it with its meta area, checks argument validation, then makes every
 *	CPU emit N records through /sys/kernel/debug/klog_gen/run while it
 *	drains the buffer through the meta area and CONSUME, and checks
 *	that the records "klog_gen cpu=CPU seq=K" arrive in order, K = 0 ..
 *	N - 1, with none missing.  N defaults to what fits in n_subbufs - 1
 *	sub-buffers, so that no record is lost even if the reader is slow.
 *	With -l records may be lost, but every missing record must be
 *	accounted for by the loss counters.
 *
 *   relay_test [-d DIR] [-c CPU] hold
 *	opens and maps the buffer, prints "# holding ...", waits for end of
 *	file on its standard input (the caller removes the modules, then
 *	closes it), then checks that the buffer reports FINALIZED and that
 *	the ioctls, read(2) and the mapping still work.  No timeout: the
 *	guest's clock is not to be trusted under emulation.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/relay.h>

#define HDR_SIZE	4
#define MAX_RECORD	32	/* "klog_gen cpu=%u seq=%u\n", seq < 10^7 */

static int failures;
static int test_nr;

static void result(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d - ", ok ? "ok" : "not ok", ++test_nr);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (!ok)
		failures++;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* Expect ioctl() to fail with errno @err. */
static void expect_err(int fd, unsigned long cmd, void *arg, int err,
		       const char *name)
{
	int ret = ioctl(fd, cmd, arg);

	result(ret == -1 && errno == err, "%s fails with %s (got %d, %s)",
	       name, strerror(err), ret, ret ? strerror(errno) : "success");
}

/* The counters of the meta area, read as one consistent snapshot. */
struct state {
	__u64 produced;
	__u64 consumed;
	__u64 lost_full;
	__u64 lost_toobig;
	__u64 lost_overwritten;
	__u32 flags;
};

static const struct relay_meta *meta;

static struct relay_meta_slot *meta_slot(__u64 idx)
{
	return (void *)((char *)meta + meta->slots_offset + idx * meta->slot_len);
}

/*
 * A 64-bit field of the meta area as two 32-bit loads, as a 32-bit kernel
 * stores it: an 8-byte atomic load may be a locked cmpxchg on 32-bit x86,
 * which faults on a read-only mapping.  Consistent where the writer owns
 * the field and it is read under seq_lock; a slot's seq is only compared
 * with the number expected, which a torn value cannot fake.
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

/* The reader's side of the sequence count in <linux/relay.h>. */
static struct state get_state(void)
{
	struct state st;
	__u32 seq;

	st.flags = __atomic_load_n(&meta->flags, __ATOMIC_ACQUIRE);
	for (;;) {
		seq = __atomic_load_n(&meta->seq_lock, __ATOMIC_ACQUIRE);
		if (seq & 1)
			continue;
		st.produced = load_u64(&meta->produced);
		st.lost_full = load_u64(&meta->lost_full);
		st.lost_toobig = load_u64(&meta->lost_toobig);
		st.lost_overwritten = load_u64(&meta->lost_overwritten);
		/* Pairs with the writer's barrier before it ends the update. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&meta->seq_lock, __ATOMIC_RELAXED) == seq)
			break;
	}
	st.consumed = load_u64(&meta->consumed);
	return st;
}

static __u64 first_ready(const struct relay_buf_info *info,
			 const struct state *st)
{
	if ((info->flags & RELAY_BUF_OVERWRITE) &&
	    st->produced >= info->n_subbufs &&
	    st->produced - info->n_subbufs + 1 > st->consumed)
		return st->produced - info->n_subbufs + 1;
	return st->consumed;
}

#define MAX_CPUS	1024

struct checker {
	unsigned int cpu;	/* CPU of the records, or ~0U: any (global) */
	unsigned int ncpus;	/* CPUs emitting records */
	__u64 next_seq[MAX_CPUS];	/* next record number expected */
	__u64 records;		/* records seen */
	__u64 missing;		/* records skipped in the sequence */
	__u64 bad;		/* malformed records */
	__u64 subbufs;		/* sub-buffers processed */
	__u64 stale;		/* sub-buffers reported overwritten */
	__u64 bad_hdr;		/* headers not matching the padding */
	__u64 consumes;		/* CONSUME calls */
};

static void check_records(struct checker *c, const char *data, size_t len)
{
	const char *p = data, *end = data + len, *nl;
	unsigned int cpu, seq;

	while (p < end) {
		nl = memchr(p, '\n', end - p);
		if (!nl || sscanf(p, "klog_gen cpu=%u seq=%u\n", &cpu, &seq) != 2 ||
		    cpu >= c->ncpus || (c->cpu != ~0U && cpu != c->cpu)) {
			if (c->bad++ < 5)
				fprintf(stderr, "malformed record at %zu: %.40s\n",
					(size_t)(p - data), p);
			if (!nl)
				break;
			p = nl + 1;
			continue;
		}
		if (seq < c->next_seq[cpu]) {
			if (c->bad++ < 5)
				fprintf(stderr, "cpu %u: seq %u after %llu\n", cpu,
					seq, (unsigned long long)c->next_seq[cpu]);
		} else {
			c->missing += seq - c->next_seq[cpu];
			c->next_seq[cpu] = seq + 1;
		}
		c->records++;
		p = nl + 1;
	}
}

/*
 * Process every ready sub-buffer, then release them with one CONSUME;
 * returns how many were processed.  The data is copied out, and in
 * overwrite mode kept only if the slot still holds the sub-buffer after
 * the copy.  No system call per sub-buffer.
 */
static unsigned int drain(int fd, const struct relay_buf_info *info,
			  const char *map, char *copy, struct checker *c)
{
	bool overwrite = info->flags & RELAY_BUF_OVERWRITE;
	struct state st = get_state();
	struct relay_meta_slot *slot;
	struct relay_consume cons;
	__u64 seq, slot_seq, data_offset, data_len, padding;
	unsigned int n = 0, hdr;
	int tries;

	for (seq = first_ready(info, &st); seq < st.produced; seq++) {
		slot = meta_slot(seq % info->n_subbufs);
		slot_seq = load_u64(&slot->seq);
		if (slot_seq != seq) {
			if (!overwrite || slot_seq < seq ||
			    slot_seq == RELAY_META_SLOT_EMPTY) {
				fprintf(stderr, "seq %llu: slot holds %llu\n",
					(unsigned long long)seq,
					(unsigned long long)slot_seq);
				c->bad++;
			}
			c->stale++;
			continue;
		}
		padding = __atomic_load_n(&slot->padding, __ATOMIC_RELAXED);
		data_offset = (seq % info->n_subbufs) * info->subbuf_size +
			      __atomic_load_n(&slot->header, __ATOMIC_RELAXED);
		data_len = info->subbuf_size - padding -
			   (data_offset % info->subbuf_size);
		/* The header is written just after the switch: allow a delay. */
		for (tries = 0; tries < 1000; tries++) {
			memcpy(&hdr, map + data_offset - HDR_SIZE, sizeof(hdr));
			if (hdr == padding)
				break;
			usleep(1000);
		}
		memcpy(copy, map + data_offset, data_len);
		/* Pairs with the writer's full barrier after it claims a slot. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (load_u64(&slot->seq) != seq) {
			c->stale++;
			continue;
		}

		if (hdr != padding && c->bad_hdr++ < 5)
			fprintf(stderr, "seq %llu: header %u, padding %llu\n",
				(unsigned long long)seq, hdr,
				(unsigned long long)padding);
		if (data_len + padding + HDR_SIZE != info->subbuf_size ||
		    data_offset != (seq % info->n_subbufs) * info->subbuf_size +
				   HDR_SIZE) {
			fprintf(stderr, "seq %llu: bad geometry\n",
				(unsigned long long)seq);
			c->bad++;
		}
		check_records(c, copy, data_len);
		c->subbufs++;
		n++;
	}

	if (st.produced > st.consumed) {
		memset(&cons, 0, sizeof(cons));
		cons.seq = st.consumed;
		cons.count = st.produced - st.consumed;
		if (ioctl(fd, RELAY_IOC_CONSUME, &cons) < 0)
			die("RELAY_IOC_CONSUME");
		if (cons.consumed != st.produced) {
			fprintf(stderr, "CONSUME returned consumed %llu\n",
				(unsigned long long)cons.consumed);
			c->bad++;
		}
		c->consumes++;
	}
	return n;
}

static void write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0)
		die(path);
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		die(path);
	close(fd);
}

struct gen_arg {
	const char *count;
	bool done;		/* accessed atomically */
};

static void *gen_thread(void *p)
{
	struct gen_arg *arg = p;

	write_file("/sys/kernel/debug/klog_gen/run", arg->count);
	__atomic_store_n(&arg->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static size_t read_size_t(const char *path)
{
	size_t val = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		die(path);
	if (pread(fd, &val, sizeof(val), 0) != sizeof(val))
		die(path);
	close(fd);
	return val;
}

static void expect_map(int fd, size_t len, off_t off, int prot, int err,
		       const char *name)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, off);

	if (!err)
		result(p != MAP_FAILED, "%s works (%s)", name,
		       p == MAP_FAILED ? strerror(errno) : "ok");
	else
		result(p == MAP_FAILED && errno == err, "%s fails with %s (%s)",
		       name, strerror(err),
		       p == MAP_FAILED ? strerror(errno) : "success");
	if (p != MAP_FAILED)
		munmap(p, len);
}

static void test_bad_args(int fd, int wfd, const struct relay_buf_info *info)
{
	struct relay_consume cons;
	struct state st;
	__u32 small[4];
	long pgsz = sysconf(_SC_PAGESIZE);
	int ret;

	expect_err(fd, _IO(RELAY_IOC_MAGIC, 0x7f), NULL, ENOTTY,
		   "unknown ioctl number");
	expect_err(fd, _IO('x', 0), NULL, ENOTTY, "foreign ioctl type");
	expect_err(fd, _IOW(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_GET_INFO),
			    struct relay_buf_info),
		   (void *)info, ENOTTY, "GET_INFO with wrong direction");
	expect_err(fd, _IOR(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_FLUSH), int),
		   small, ENOTTY, "FLUSH with a size");
	expect_err(fd, _IOR(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_GET_INFO),
			    __u32[4]),
		   small, EINVAL, "GET_INFO with a short struct");
	expect_err(fd, _IOWR(RELAY_IOC_MAGIC, _IOC_NR(RELAY_IOC_CONSUME),
			     __u32[4]),
		   small, EINVAL, "CONSUME with a short struct");

	st = get_state();
	if (st.consumed) {
		memset(&cons, 0, sizeof(cons));
		cons.seq = st.consumed - 1;
		cons.count = 1;
		expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
			   "CONSUME below the consumed count");
	}
	memset(&cons, 0, sizeof(cons));
	cons.seq = st.consumed;
	cons.count = st.produced - st.consumed + 1;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME beyond the produced count");
	cons.seq = st.produced + 1;
	cons.count = 1;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME starting beyond the consumed count");
	cons.seq = st.consumed;
	cons.count = ~0ULL;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME with an overflowing count");
	memset(&cons, 0, sizeof(cons));
	cons.seq = ~0ULL;
	ret = ioctl(fd, RELAY_IOC_CONSUME, &cons);
	result(ret == sizeof(cons) && cons.consumed == st.consumed,
	       "CONSUME of nothing returns the consumed count (%d, %llu)",
	       ret, (unsigned long long)cons.consumed);

	expect_map(fd, info->mmap_len - pgsz, 0, PROT_READ, EINVAL,
		   "mmap of a wrong length");
	expect_map(fd, info->mmap_len, 0, PROT_READ, 0, "mmap of the buffer");
	expect_map(fd, info->meta_len, info->mmap_len, PROT_READ, 0,
		   "mmap of the meta area alone");
	expect_map(fd, info->meta_len, pgsz, PROT_READ, EINVAL,
		   "mmap at another offset");
	expect_map(fd, info->meta_len + pgsz, info->mmap_len, PROT_READ, EINVAL,
		   "mmap beyond the meta area");
	/* Through a read-only open the VFS refuses it before relay does. */
	expect_map(fd, info->mmap_len + info->meta_len, 0,
		   PROT_READ | PROT_WRITE, EACCES,
		   "writable mmap through a read-only open");
	if (wfd >= 0)
		expect_map(wfd, info->mmap_len + info->meta_len, 0,
			   PROT_READ | PROT_WRITE, EPERM,
			   "writable mmap through a read-write open");
}

static void test_meta(const struct relay_buf_info *info)
{
	__u64 i, end = meta->slots_offset + info->n_subbufs * meta->slot_len;

	result(meta->version == RELAY_META_VERSION &&
	       meta->meta_struct_len >= sizeof(*meta) &&
	       meta->meta_len == info->meta_len,
	       "meta area: version %u, struct %u bytes, %u bytes long",
	       meta->version, meta->meta_struct_len, meta->meta_len);
	result(meta->slots_offset >= meta->meta_struct_len &&
	       meta->slot_len >= sizeof(struct relay_meta_slot) &&
	       end <= meta->meta_len,
	       "meta area: %llu slots of %u bytes from %u fit",
	       (unsigned long long)info->n_subbufs, meta->slot_len,
	       meta->slots_offset);
	result(meta->subbuf_size == info->subbuf_size &&
	       meta->n_subbufs == info->n_subbufs && meta->cpu == info->cpu,
	       "meta area geometry matches GET_INFO");
	result(meta->caps & RELAY_META_CAP_FLUSH,
	       "meta area announces FLUSH");
	for (i = 0; i < info->n_subbufs; i++)
		if (meta_slot(i)->header > info->subbuf_size ||
		    meta_slot(i)->padding > info->subbuf_size)
			break;
	result(i == info->n_subbufs, "slot headers and paddings in range");
}

static int run_test(const char *dir, unsigned int cpu, __u64 n,
		    bool allow_loss)
{
	struct relay_buf_info info;
	struct state st0, st;
	unsigned int busy_drains = 0, i;
	struct gen_arg gen = {};
	static struct checker c;
	struct relay_consume cons;
	struct pollfd pfd;
	pthread_t thr;
	char path[512];
	long pgsz = sysconf(_SC_PAGESIZE);
	char count[32], *map, *copy;
	__u64 lost;
	int fd, wfd, ret;

	snprintf(path, sizeof(path), "%s/cpu%u", dir, cpu);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);

	ret = ioctl(fd, RELAY_IOC_GET_INFO, &info);
	if (ret < 0)
		die("RELAY_IOC_GET_INFO");
	result(ret == sizeof(info), "GET_INFO fills %d bytes", ret);
	c.cpu = (info.flags & RELAY_BUF_GLOBAL) ? ~0U : cpu;
	c.ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (c.ncpus > MAX_CPUS)
		c.ncpus = MAX_CPUS;
	printf("# %s: subbuf_size %llu n_subbufs %llu mmap_len %llu cpu %u flags %#x\n",
	       path, (unsigned long long)info.subbuf_size,
	       (unsigned long long)info.n_subbufs,
	       (unsigned long long)info.mmap_len, info.cpu, info.flags);
	result(info.mmap_len ==
	       ((info.subbuf_size * info.n_subbufs + pgsz - 1) & ~(pgsz - 1)),
	       "GET_INFO mmap_len is the page-aligned buffer size");
	result(info.cpu == cpu && !(info.flags & RELAY_BUF_FINALIZED),
	       "GET_INFO cpu and flags");

	map = mmap(NULL, info.mmap_len + info.meta_len, PROT_READ, MAP_SHARED,
		   fd, 0);
	result(map != MAP_FAILED, "mmap of the buffer and its meta area (%s)",
	       map == MAP_FAILED ? strerror(errno) : "ok");
	if (map == MAP_FAILED)
		return 1;
	meta = (const struct relay_meta *)(map + info.mmap_len);
	test_meta(&info);
	copy = malloc(info.subbuf_size);
	if (!copy)
		die("malloc");

	/* By default, what fits in the buffer even if the reader sleeps. */
	if (!n)
		n = (info.n_subbufs - 1) * (info.subbuf_size - HDR_SIZE) /
		    MAX_RECORD / (c.cpu == ~0U ? c.ncpus : 1);
	snprintf(count, sizeof(count), "%llu", (unsigned long long)n);
	gen.count = count;
	printf("# %llu records per CPU\n", (unsigned long long)n);

	/* Start from an empty buffer. */
	if (ioctl(fd, RELAY_IOC_FLUSH))
		die("RELAY_IOC_FLUSH");
	st = get_state();
	if (st.produced > st.consumed) {
		memset(&cons, 0, sizeof(cons));
		cons.seq = st.consumed;
		cons.count = st.produced - st.consumed;
		if (ioctl(fd, RELAY_IOC_CONSUME, &cons) < 0)
			die("RELAY_IOC_CONSUME");
		result(cons.consumed == st.produced,
		       "CONSUME of all ready sub-buffers");
	}

	wfd = open(path, O_RDWR);
	test_bad_args(fd, wfd, &info);
	if (wfd >= 0)
		close(wfd);

	st0 = get_state();
	if (ioctl(fd, RELAY_IOC_FLUSH))
		die("RELAY_IOC_FLUSH");
	st = get_state();
	result(st.produced == st0.produced,
	       "FLUSH of an empty buffer does nothing");

	if (pthread_create(&thr, NULL, gen_thread, &gen))
		die("pthread_create");
	pfd.fd = fd;
	pfd.events = POLLIN;
	while (!__atomic_load_n(&gen.done, __ATOMIC_ACQUIRE)) {
		poll(&pfd, 1, 20);
		if (drain(fd, &info, map, copy, &c))
			busy_drains++;
	}
	pthread_join(thr, NULL);
	if (ioctl(fd, RELAY_IOC_FLUSH))
		die("RELAY_IOC_FLUSH");
	drain(fd, &info, map, copy, &c);

	st = get_state();
	lost = (st.lost_full - st0.lost_full) +
	       (st.lost_toobig - st0.lost_toobig);
	/* Records lost at the end of a sequence are not gaps yet. */
	for (i = 0; i < c.ncpus; i++)
		if (c.cpu == ~0U || c.cpu == i)
			c.missing += n - c.next_seq[i];
	if (c.cpu == ~0U)
		n *= c.ncpus;
	printf("# drains with data while running %u, CONSUME calls %llu\n",
	       busy_drains, (unsigned long long)c.consumes);
	printf("# records %llu missing %llu sub-buffers %llu stale %llu\n",
	       (unsigned long long)c.records, (unsigned long long)c.missing,
	       (unsigned long long)c.subbufs, (unsigned long long)c.stale);
	printf("# lost_full %llu lost_toobig %llu lost_overwritten %llu\n",
	       (unsigned long long)(st.lost_full - st0.lost_full),
	       (unsigned long long)(st.lost_toobig - st0.lost_toobig),
	       (unsigned long long)(st.lost_overwritten - st0.lost_overwritten));

	result(!c.bad, "records well-formed and in order");
	result(!c.bad_hdr, "sub-buffer headers hold the padding");
	result(st.produced == st.consumed,
	       "buffer empty after FLUSH and drain");
	result(c.consumes <= c.subbufs + c.stale,
	       "at most one CONSUME per sub-buffer (%llu for %llu)",
	       (unsigned long long)c.consumes,
	       (unsigned long long)(c.subbufs + c.stale));
	if (allow_loss) {
		if (info.flags & RELAY_BUF_OVERWRITE)
			result(!c.missing || c.stale ||
			       st.lost_overwritten > st0.lost_overwritten,
			       "missing records explained by overwritten sub-buffers");
		else
			result(c.missing == lost,
			       "missing records (%llu) == dropped writes (%llu)",
			       (unsigned long long)c.missing,
			       (unsigned long long)lost);
	} else {
		result(c.records == n && !c.missing && !lost && !c.stale,
		       "all %llu records received, none lost",
		       (unsigned long long)n);
	}

	snprintf(path, sizeof(path), "%s/cpu%u.produced", dir, cpu);
	result(read_size_t(path) == st.produced,
	       "cpu%u.produced matches the meta area", cpu);
	snprintf(path, sizeof(path), "%s/cpu%u.consumed", dir, cpu);
	result(read_size_t(path) == st.consumed,
	       "cpu%u.consumed matches the meta area", cpu);

	free(copy);
	munmap(map, info.mmap_len + info.meta_len);
	close(fd);
	return 0;
}

static int hold_test(const char *dir, unsigned int cpu)
{
	struct relay_buf_info info;
	char path[512], buf[4096];
	unsigned long sum = 0;
	size_t off;
	char *map;
	int fd;

	snprintf(path, sizeof(path), "%s/cpu%u", dir, cpu);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	if (ioctl(fd, RELAY_IOC_GET_INFO, &info) < 0)
		die("RELAY_IOC_GET_INFO");
	map = mmap(NULL, info.mmap_len + info.meta_len, PROT_READ, MAP_SHARED,
		   fd, 0);
	if (map == MAP_FAILED)
		die("mmap");
	meta = (const struct relay_meta *)(map + info.mmap_len);
	printf("# holding %s until end of input\n", path);
	fflush(stdout);
	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
		;

	result(ioctl(fd, RELAY_IOC_GET_INFO, &info) >= 0 &&
	       (info.flags & RELAY_BUF_FINALIZED),
	       "GET_INFO after removal reports FINALIZED");
	result(get_state().flags & RELAY_BUF_FINALIZED,
	       "the meta area after removal reports FINALIZED");
	result(!ioctl(fd, RELAY_IOC_FLUSH), "FLUSH after removal is a no-op");
	result(read(fd, buf, sizeof(buf)) >= 0, "read(2) after removal works");
	for (off = 0; off < info.mmap_len; off += 64)
		sum += (unsigned char)map[off];
	result(true, "mapping still readable (checksum %lu)", sum);
	munmap(map, info.mmap_len + info.meta_len);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = "/sys/kernel/debug/relay_klog";
	__u64 count = 0;
	unsigned int cpu = 0;
	bool allow_loss = false;
	int opt;

	while ((opt = getopt(argc, argv, "d:c:n:l")) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'c':
			cpu = strtoul(optarg, NULL, 0);
			break;
		case 'n':
			count = strtoull(optarg, NULL, 0);
			break;
		case 'l':
			allow_loss = true;
			break;
		default:
			fprintf(stderr,
				"usage: %s [-d dir] [-c cpu] [-n N] [-l] [hold]\n",
				argv[0]);
			return 2;
		}
	}

	if (optind + 1 == argc && !strcmp(argv[optind], "hold"))
		hold_test(dir, cpu);
	else
		run_test(dir, cpu, count, allow_loss);

	printf("# %d tests, %d failed\n", test_nr, failures);
	return failures ? 1 : 0;
}
