/* Connection tracking: one LRU hash for all endpoints. */
#ifndef PALISADE_ABI_CONNTRACK_H
#define PALISADE_ABI_CONNTRACK_H
#include "common.h"

/*
 * The tuple is the one of the packet that created the entry. dir says which
 * policy admitted it: PAL_DIR_EGRESS (the endpoint whose ep_id is stored
 * opened it) or PAL_DIR_INGRESS (the connection came into ep_id).
 * For ICMP echo the identifier is carried in sport (request) / dport (reply).
 */
struct pal_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 dir;
	__u16 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_ct_key, 16);

/* Set once a packet in the reply direction was seen. */
#define PAL_CT_SEEN_REPLY (1 << 0)
/* The entry was admitted in audit mode by a policy that would have denied it. */
#define PAL_CT_AUDITED (1 << 1)
/* A FIN or RST was seen. */
#define PAL_CT_CLOSING (1 << 2)
/*
 * Policy no longer allows the connection: every packet of it, in either
 * direction, is dropped (POLICY_REVOKED; AUTH_REQUIRED with
 * PAL_CT_AUTH_PENDING) until a later policy revision allows it again (or,
 * pending, until the pair is authenticated). The entry is kept (not deleted) so that a retransmission
 * from the side that does not enforce cannot start the connection afresh.
 */
#define PAL_CT_REVOKED (1 << 3)
/*
 * The remote identity came with the packet from the overlay (the sending
 * node's word for it), not from the ipcache: a re-evaluation keeps it
 * unless a newer packet carries another.
 */
#define PAL_CT_TUNNEL_IDENTITY (1 << 4)
/*
 * With PAL_CT_REVOKED: policy allows the connection but requires mutual
 * authentication that is missing (AUTH_REQUIRED). Every packet checks
 * again, so that the connection resumes as soon as the agents have
 * authenticated the pair.
 */
#define PAL_CT_AUTH_PENDING (1 << 5)

struct pal_ct_value {
	__u64 created_ns;   /* bpf_ktime_get_ns() when created */
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
	__u64 packets;      /* both directions */
	__u64 bytes;        /* both directions */
	__u32 policy_rev;   /* policy revision the verdict was taken at */
	__u32 remote_identity;
	__u16 ep_id;
	__u8 flags;         /* PAL_CT_* */
	__u8 pad;
	__u32 rule_id;      /* rule that allowed it (pal_policy_value.rule_id) */
};
PAL_ABI_ASSERT_SIZE(struct pal_ct_value, 48);

/* Fragment tracking: the L4 ports of a datagram, learnt from its first fragment. */
struct pal_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 protocol;
	__u8 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_frag_key, 12);

struct pal_frag_value {
	__be16 sport;
	__be16 dport;
};
PAL_ABI_ASSERT_SIZE(struct pal_frag_value, 4);

#endif
