// SPDX-License-Identifier: GPL-2.0
/*
 * Test of the relay buffer ioctls (<linux/relay.h>) against the relay_klog
 * and klog_gen sample modules.
 *
 *   relay_test [-d DIR] [-c CPU] [-n N] [-l]
 *	opens DIR/cpuCPU (default /sys/kernel/debug/relay_klog/cpu0), maps
 *	it, checks argument validation, then makes every CPU emit N records
 *	through /sys/kernel/debug/klog_gen/run while it
 *	drains the buffer with GET_STATE, GET_SUBBUF and CONSUME, and checks
 *	that the records "klog_gen cpu=CPU seq=K" arrive in order, K = 0 ..
 *	N - 1, with none missing.  N defaults to what fits in n_subbufs - 1
 *	sub-buffers, so that no record is lost even if the reader is slow.
 *	With -l records may be lost, but every missing record must be
 *	accounted for by the loss counters.
 *
 *   relay_test [-d DIR] [-c CPU] hold SECONDS
 *	opens and maps the buffer, waits SECONDS (for the modules to be
 *	removed meanwhile), then checks that the buffer reports FINALIZED
 *	and that the ioctls, read(2) and the mapping still work.
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

static struct relay_buf_state get_state(int fd)
{
	struct relay_buf_state st;

	if (ioctl(fd, RELAY_IOC_GET_STATE, &st))
		die("RELAY_IOC_GET_STATE");
	return st;
}

static __u64 first_ready(const struct relay_buf_info *info,
			 const struct relay_buf_state *st)
{
	if ((info->flags & RELAY_BUF_OVERWRITE) &&
	    st->produced >= info->n_subbufs &&
	    st->produced - info->n_subbufs + 1 > st->consumed)
		return st->produced - info->n_subbufs + 1;
	return st->consumed;
}

/*
 * Nothing written into the current sub-buffer; or no current sub-buffer
 * because a full buffer stopped the writer (no-overwrite mode), until the
 * next write.
 */
static bool idle(const struct relay_buf_info *info,
		 const struct relay_buf_state *st)
{
	return st->write_offset == HDR_SIZE ||
	       (!(info->flags & RELAY_BUF_OVERWRITE) &&
		st->write_offset == info->subbuf_size);
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
 * Process and release every ready sub-buffer; returns how many.  The data
 * is copied out before CONSUME and discarded if CONSUME reports that the
 * writer overwrote it meanwhile (overwrite mode).
 */
static unsigned int drain(int fd, const struct relay_buf_info *info,
			  const char *map, char *copy, struct checker *c)
{
	struct relay_buf_state st = get_state(fd);
	struct relay_consume cons;
	struct relay_subbuf sb;
	unsigned int n = 0, hdr;
	__u64 seq;
	int tries;

	for (seq = first_ready(info, &st); seq < st.produced; seq++) {
		memset(&sb, 0, sizeof(sb));
		sb.seq = seq;
		if (ioctl(fd, RELAY_IOC_GET_SUBBUF, &sb)) {
			if (errno == ESTALE) {
				c->stale++;
				continue;
			}
			die("RELAY_IOC_GET_SUBBUF");
		}
		/* The header is written just after the switch: allow a delay. */
		for (tries = 0; tries < 1000; tries++) {
			memcpy(&hdr, map + sb.data_offset - HDR_SIZE, sizeof(hdr));
			if (hdr == sb.padding)
				break;
			usleep(1000);
		}
		memcpy(copy, map + sb.data_offset, sb.data_len);

		memset(&cons, 0, sizeof(cons));
		cons.seq = seq;
		cons.count = 1;
		if (ioctl(fd, RELAY_IOC_CONSUME, &cons))
			die("RELAY_IOC_CONSUME");
		if (cons.consumed != seq + 1) {
			fprintf(stderr, "CONSUME returned consumed %llu\n",
				(unsigned long long)cons.consumed);
			c->bad++;
		}
		if (cons.lost) {
			c->stale += cons.lost;
			continue;
		}

		if (hdr != sb.padding && c->bad_hdr++ < 5)
			fprintf(stderr, "seq %llu: header %u, padding %llu\n",
				(unsigned long long)seq, hdr,
				(unsigned long long)sb.padding);
		if (sb.data_len + sb.padding + HDR_SIZE != info->subbuf_size ||
		    sb.data_offset != (seq % info->n_subbufs) * info->subbuf_size +
				      HDR_SIZE) {
			fprintf(stderr, "seq %llu: bad geometry\n",
				(unsigned long long)seq);
			c->bad++;
		}
		check_records(c, copy, sb.data_len);
		c->subbufs++;
		n++;
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

static void test_bad_args(int fd, const struct relay_buf_info *info)
{
	struct relay_buf_state st;
	struct relay_consume cons;
	struct relay_subbuf sb;
	struct {
		struct relay_subbuf sb;
		__u64 extra;
	} big;
	__u32 small[4];
	long pgsz = sysconf(_SC_PAGESIZE);
	void *p;

	expect_err(fd, _IO(RELAY_IOC_MAGIC, 0x7f), NULL, ENOTTY,
		   "unknown ioctl number");
	expect_err(fd, _IO('x', 0), NULL, ENOTTY, "foreign ioctl type");
	expect_err(fd, _IOW(RELAY_IOC_MAGIC, 0x00, struct relay_buf_info),
		   (void *)info, ENOTTY, "GET_INFO with wrong direction");
	expect_err(fd, _IOR(RELAY_IOC_MAGIC, 0x04, int), small, ENOTTY,
		   "FLUSH with a size");
	expect_err(fd, _IOR(RELAY_IOC_MAGIC, 0x00, __u32[4]), small, EINVAL,
		   "GET_INFO with a short struct");
	expect_err(fd, _IOWR(RELAY_IOC_MAGIC, 0x03, __u32[4]), small, EINVAL,
		   "CONSUME with a short struct");

	st = get_state(fd);
	memset(&sb, 0, sizeof(sb));
	sb.seq = st.produced;
	expect_err(fd, RELAY_IOC_GET_SUBBUF, &sb, ENODATA,
		   "GET_SUBBUF of the sub-buffer being written");
	sb.seq = st.produced + 1000;
	expect_err(fd, RELAY_IOC_GET_SUBBUF, &sb, ENODATA,
		   "GET_SUBBUF of a future sub-buffer");
	if (st.consumed) {
		sb.seq = st.consumed - 1;
		expect_err(fd, RELAY_IOC_GET_SUBBUF, &sb, EINVAL,
			   "GET_SUBBUF of a consumed sub-buffer");
		memset(&cons, 0, sizeof(cons));
		cons.seq = st.consumed - 1;
		cons.count = 1;
		expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
			   "CONSUME below the consumed count");
	}

	memset(&big, 0, sizeof(big));
	big.sb.seq = st.produced;
	big.extra = 1;
	expect_err(fd, _IOWR(RELAY_IOC_MAGIC, 0x02, big), &big, E2BIG,
		   "GET_SUBBUF with unknown non-zero input");
	big.extra = 0;
	expect_err(fd, _IOWR(RELAY_IOC_MAGIC, 0x02, big), &big, ENODATA,
		   "GET_SUBBUF with a larger zero-extended struct");

	memset(&cons, 0, sizeof(cons));
	cons.seq = st.consumed;
	cons.count = st.produced - st.consumed + 1;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME beyond the produced count");
	cons.seq = st.produced;
	cons.count = 0;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME starting at the produced count");
	cons.seq = st.produced + 1;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME starting beyond the produced count");
	cons.seq = st.consumed;
	cons.count = ~0ULL;
	expect_err(fd, RELAY_IOC_CONSUME, &cons, EINVAL,
		   "CONSUME with an overflowing count");

	p = mmap(NULL, info->mmap_len - pgsz, PROT_READ, MAP_SHARED, fd, 0);
	result(p == MAP_FAILED && errno == EINVAL,
	       "mmap of a wrong length fails with EINVAL");
	if (p != MAP_FAILED)
		munmap(p, info->mmap_len - pgsz);
}

static int run_test(const char *dir, unsigned int cpu, __u64 n,
		    bool allow_loss)
{
	struct relay_buf_state st0, st;
	struct relay_buf_info info;
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
	int fd;

	snprintf(path, sizeof(path), "%s/cpu%u", dir, cpu);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);

	if (ioctl(fd, RELAY_IOC_GET_INFO, &info))
		die("RELAY_IOC_GET_INFO");
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

	map = mmap(NULL, info.mmap_len, PROT_READ, MAP_SHARED, fd, 0);
	result(map != MAP_FAILED, "mmap of mmap_len bytes (%s)",
	       map == MAP_FAILED ? strerror(errno) : "ok");
	if (map == MAP_FAILED)
		return 1;
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
	st = get_state(fd);
	if (st.produced > st.consumed) {
		memset(&cons, 0, sizeof(cons));
		cons.seq = st.consumed;
		cons.count = st.produced - st.consumed;
		if (ioctl(fd, RELAY_IOC_CONSUME, &cons))
			die("RELAY_IOC_CONSUME");
		result(cons.consumed == st.produced,
		       "CONSUME of all ready sub-buffers");
	}

	test_bad_args(fd, &info);

	st0 = get_state(fd);
	if (ioctl(fd, RELAY_IOC_FLUSH))
		die("RELAY_IOC_FLUSH");
	st = get_state(fd);
	result(st.produced == st0.produced && idle(&info, &st),
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

	st = get_state(fd);
	lost = (st.lost_full - st0.lost_full) +
	       (st.lost_toobig - st0.lost_toobig);
	/* Records lost at the end of a sequence are not gaps yet. */
	for (i = 0; i < c.ncpus; i++)
		if (c.cpu == ~0U || c.cpu == i)
			c.missing += n - c.next_seq[i];
	if (c.cpu == ~0U)
		n *= c.ncpus;
	printf("# drains with data while running %u\n", busy_drains);
	printf("# records %llu missing %llu sub-buffers %llu stale %llu\n",
	       (unsigned long long)c.records, (unsigned long long)c.missing,
	       (unsigned long long)c.subbufs, (unsigned long long)c.stale);
	printf("# lost_full %llu lost_toobig %llu lost_overwritten %llu\n",
	       (unsigned long long)(st.lost_full - st0.lost_full),
	       (unsigned long long)(st.lost_toobig - st0.lost_toobig),
	       (unsigned long long)(st.lost_overwritten - st0.lost_overwritten));

	result(!c.bad, "records well-formed and in order");
	result(!c.bad_hdr, "sub-buffer headers hold the padding");
	result(st.produced == st.consumed && idle(&info, &st),
	       "buffer empty after FLUSH and drain");
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
	       "cpu%u.produced matches GET_STATE", cpu);
	snprintf(path, sizeof(path), "%s/cpu%u.consumed", dir, cpu);
	result(read_size_t(path) == st.consumed,
	       "cpu%u.consumed matches GET_STATE", cpu);

	free(copy);
	munmap(map, info.mmap_len);
	close(fd);
	return 0;
}

static int hold_test(const char *dir, unsigned int cpu, unsigned int secs)
{
	struct relay_buf_info info;
	struct relay_buf_state st;
	char path[512], buf[4096];
	unsigned long sum = 0;
	size_t off;
	char *map;
	int fd;

	snprintf(path, sizeof(path), "%s/cpu%u", dir, cpu);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	if (ioctl(fd, RELAY_IOC_GET_INFO, &info))
		die("RELAY_IOC_GET_INFO");
	map = mmap(NULL, info.mmap_len, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap");
	printf("# holding %s for %u s\n", path, secs);
	fflush(stdout);
	sleep(secs);

	result(!ioctl(fd, RELAY_IOC_GET_INFO, &info) &&
	       (info.flags & RELAY_BUF_FINALIZED),
	       "GET_INFO after removal reports FINALIZED");
	result(!ioctl(fd, RELAY_IOC_GET_STATE, &st) &&
	       (st.flags & RELAY_BUF_FINALIZED),
	       "GET_STATE after removal works");
	result(!ioctl(fd, RELAY_IOC_FLUSH), "FLUSH after removal is a no-op");
	result(read(fd, buf, sizeof(buf)) >= 0, "read(2) after removal works");
	for (off = 0; off < info.mmap_len; off += 64)
		sum += (unsigned char)map[off];
	result(true, "mapping still readable (checksum %lu)", sum);
	munmap(map, info.mmap_len);
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
				"usage: %s [-d dir] [-c cpu] [-n N] [-l] [hold SECONDS]\n",
				argv[0]);
			return 2;
		}
	}

	if (optind + 2 == argc && !strcmp(argv[optind], "hold"))
		hold_test(dir, cpu, strtoul(argv[optind + 1], NULL, 0));
	else
		run_test(dir, cpu, count, allow_loss);

	printf("# %d tests, %d failed\n", test_nr, failures);
	return failures ? 1 : 0;
}
