// SPDX-License-Identifier: GPL-2.0
/*
 * The BPF side of `relay-bench transports`: two programs on relay_xbench's
 * tracepoint relay_xbench_record(data, len), attached one at a time as raw
 * tracepoints, each copying the record into its transport:
 *   to_ringbuf  bpf_ringbuf_reserve() + bpf_probe_read_kernel() into the
 *               reserved room + bpf_ringbuf_submit(): one copy, as
 *               relay_write() makes
 *   to_perfbuf  bpf_probe_read_kernel() onto the stack, then
 *               bpf_perf_event_output() into this CPU's perf buffer
 * A record the transport has no room for is counted in `dropped` (a
 * per-CPU array, one slot); the sizes are the benchmark's: 8, 64, 256.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* Set by the loader (the same memory as the relay channel). */
	__uint(max_entries, 4096);
} ringbuf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perfbuf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &key);

	if (n)
		(*n)++;
}

/*
 * Reserve, copy in place, submit.  Inlined with a constant @size, as
 * bpf_ringbuf_reserve() needs.
 */
static __always_inline void ringbuf_record(const void *data, __u32 size)
{
	void *room = bpf_ringbuf_reserve(&ringbuf, size, 0);

	if (!room) {
		count_drop();
		return;
	}
	bpf_probe_read_kernel(room, size, data);
	bpf_ringbuf_submit(room, 0);
}

SEC("raw_tp/relay_xbench_record")
int to_ringbuf(struct bpf_raw_tracepoint_args *ctx)
{
	const void *data = (const void *)ctx->args[0];
	__u32 len = ctx->args[1];

	if (len == 8)
		ringbuf_record(data, 8);
	else if (len == 64)
		ringbuf_record(data, 64);
	else if (len == 256)
		ringbuf_record(data, 256);
	return 0;
}

/* Copy onto the stack, then into this CPU's perf buffer. */
static __always_inline void perfbuf_record(void *ctx, const void *data,
					   __u32 size)
{
	__u64 copy[256 / 8];

	bpf_probe_read_kernel(copy, size, data);
	if (bpf_perf_event_output(ctx, &perfbuf, BPF_F_CURRENT_CPU, copy,
				  size))
		count_drop();
}

SEC("raw_tp/relay_xbench_record")
int to_perfbuf(struct bpf_raw_tracepoint_args *ctx)
{
	const void *data = (const void *)ctx->args[0];
	__u32 len = ctx->args[1];

	if (len == 8)
		perfbuf_record(ctx, data, 8);
	else if (len == 64)
		perfbuf_record(ctx, data, 64);
	else if (len == 256)
		perfbuf_record(ctx, data, 256);
	return 0;
}
