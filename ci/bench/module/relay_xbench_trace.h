/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The tracepoint relay_xbench fires for every record it hands to the BPF
 * transports: a BPF program attached to it as a raw tracepoint
 * ("raw_tp/relay_xbench_record") gets the record's address and length.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM relay_xbench

#if !defined(_RELAY_XBENCH_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _RELAY_XBENCH_TRACE_H

#include <linux/tracepoint.h>

TRACE_EVENT(relay_xbench_record,
	    TP_PROTO(const void *data, u32 len),
	    TP_ARGS(data, len),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, len)),
	    TP_fast_assign(__entry->id = *(const u64 *)data;
			   __entry->len = len;),
	    TP_printk("id=%llx len=%u", __entry->id, __entry->len)
);

#endif /* _RELAY_XBENCH_TRACE_H */

/* This part must be outside the include guard. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#define TRACE_INCLUDE_FILE relay_xbench_trace
#include <trace/define_trace.h>
