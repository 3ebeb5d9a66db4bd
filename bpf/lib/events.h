/* Events to the agent (ring buffer) and per-reason metrics. */
#ifndef PALISADE_LIB_EVENTS_H
#define PALISADE_LIB_EVENTS_H

#include "maps.h"

static __always_inline void pal_counter_inc(__u32 idx)
{
	__u64 *val = bpf_map_lookup_elem(&pal_counters, &idx);

	if (val)
		*val += 1; /* per-CPU: no atomics needed */
}

/*
 * Sends one event. Not inlined on purpose: this keeps struct pal_event in
 * the object's BTF (the ring buffer map has no value type), where the
 * layout test finds it, and keeps the rare path out of the hot code.
 */
static __noinline int pal_event_send(struct pal_event *ev)
{
	if (!ev)
		return 0;
	if (bpf_ringbuf_output(&pal_events, ev, sizeof(*ev), 0) < 0)
		pal_counter_inc(PAL_COUNTER_EVENTS_LOST);
	return 0;
}

/* ev is the template filled while processing; type and reason are set here. */
static __always_inline void pal_emit(struct pal_event *ev, __u8 type, int reason)
{
	ev->type = type;
	ev->reason = reason;
	pal_event_send(ev);
}

/* Counts one packet of len bytes for reason at observation point obs. */
static __always_inline void pal_metrics_count(int reason, __u8 obs, __u32 len)
{
	__u32 idx = (__u32)(-reason) * PAL_OBS_MAX + obs;
	struct pal_metrics_value *val;

	if (idx >= PAL_REASON_MAX * PAL_OBS_MAX)
		return;
	val = bpf_map_lookup_elem(&pal_metrics, &idx);
	if (!val)
		return;
	val->packets += 1;
	val->bytes += len;
}

#endif
