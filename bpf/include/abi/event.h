/* Flow and drop events sent to the agent through the ring buffer. */
#ifndef PALISADE_ABI_EVENT_H
#define PALISADE_ABI_EVENT_H
#include "common.h"

/* A new connection was admitted (first packet of a flow). */
#define PAL_EVENT_FLOW_NEW 1
/* A packet was dropped. */
#define PAL_EVENT_DROP 2
/* Policy would have dropped it, but the endpoint is in audit mode. */
#define PAL_EVENT_AUDIT 3

/* Where in the datapath the event was taken. */
#define PAL_OBS_FROM_ENDPOINT 0 /* leaving an endpoint (its egress) */
#define PAL_OBS_TO_ENDPOINT 1   /* entering an endpoint (its ingress) */
#define PAL_OBS_TO_OVERLAY 2    /* leaving the node for another node */
#define PAL_OBS_FROM_OVERLAY 3  /* arriving from another node */
#define PAL_OBS_MAX 4

struct pal_event {
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() */
	__u8 type;             /* PAL_EVENT_* */
	__u8 observation;      /* PAL_OBS_* */
	__u8 protocol;         /* IPPROTO_*, 0 when not IPv4 */
	__u8 auth_type;        /* authentication the verdict needed (PAL_AUTH_TYPE_*), 0 if none */
	__s32 reason;          /* enum pal_reason */
	__u32 ifindex;
	__u16 ep_id;
	__be16 ethertype;
	__u32 src_identity;
	__u32 dst_identity;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 rule_id;         /* rule that allowed (or, for deny rules, denied) it; 0 if none */
	__u32 policy_rev;      /* policy revision the verdict was taken at */
	__be32 remote_node;    /* with auth_type: the peer's node as the auth map names it (0 = this node) */
};
PAL_ABI_ASSERT_SIZE(struct pal_event, 56);

/* Per-reason counters (PERCPU_ARRAY indexed by -reason * PAL_OBS_MAX + observation). */
struct pal_metrics_value {
	__u64 packets;
	__u64 bytes;
};
PAL_ABI_ASSERT_SIZE(struct pal_metrics_value, 16);

#endif
