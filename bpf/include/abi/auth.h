/*
 * Mutual authentication: which pairs of identities the node agents have
 * authenticated, and until when (see bpf/lib/auth.h and docs/auth.md).
 *
 * A policy entry with a non-zero auth_type lets a new connection through
 * only if this map holds an unexpired entry for (the endpoint's identity,
 * the peer's identity, the node hosting the peer, auth_type). The agent
 * writes an entry after a mutual TLS 1.3 handshake in which each node
 * proved it holds the X.509-SVID of its side's identity; the entry expires
 * no later than the earlier NotAfter of the two SVIDs.
 */
#ifndef PALISADE_ABI_AUTH_H
#define PALISADE_ABI_AUTH_H
#include "common.h"

/* pal_policy_value.auth_type: mutual TLS with SPIFFE SVIDs between the nodes. */
#define PAL_AUTH_TYPE_SPIFFE 1
/* pal_policy_value.auth_type: always fails (tests). */
#define PAL_AUTH_TYPE_ALWAYS_FAIL 2

/*
 * pal_auth_key.remote_node of a peer that is neither an endpoint of this
 * node nor behind a known node (or whose packet claims another node's
 * address without coming through the overlay): the agent never installs
 * it, so such a peer is never authenticated.
 */
#define PAL_AUTH_NODE_UNKNOWN 0xffffffff

struct pal_auth_key {
	__u32 local_identity;  /* identity of the endpoint on this node */
	__u32 remote_identity; /* identity of its peer */
	__be32 remote_node;    /* underlay address of the peer's node (pal_tunnel); 0 = this node;
				* PAL_AUTH_NODE_UNKNOWN */
	__u8 auth_type;        /* PAL_AUTH_TYPE_* */
	__u8 pad[3];
};
PAL_ABI_ASSERT_SIZE(struct pal_auth_key, 16);

struct pal_auth_value {
	__u64 expires_ns; /* bpf_ktime_get_boot_ns() after which the entry no longer counts */
};
PAL_ABI_ASSERT_SIZE(struct pal_auth_value, 8);

#endif
