/*
 * Connection tracking over pal_ct (key/value layout: abi/conntrack.h).
 *
 * Lookup at a hook of endpoint E for the packet's tuple T, where D is the
 * hook's direction (from_endpoint: EGRESS, to_endpoint: INGRESS):
 *   1. CT[{T, D}]              -> an established connection, forward packet;
 *   2. CT[{reverse(T), !D}]    -> a reply of a connection admitted the other way;
 *   3. otherwise NEW: E's policy for D decides, and CT[{T, D}] is created.
 * Same-node pod-to-pod traffic crosses from_endpoint of the sender and
 * to_endpoint of the receiver; each creates and uses its own entry.
 *
 * Ownership: an entry is only ever used at the hooks of the endpoint whose
 * ep_id it records. An entry with another ep_id (left behind by a deleted
 * endpoint whose address was reused, or a tuple seen at an unexpected veth)
 * is ignored as if missing, so no packet is ever admitted by another
 * endpoint's policy; a NEW entry then overwrites it.
 *
 * Revocation: an entry hit while entry.policy_rev != pal_state.policy_rev is
 * re-evaluated before the packet passes, with the policy that admitted it:
 * the key is (entry.ep_id, entry.dir, remote identity, protocol and dport of
 * the entry's tuple), the remote identity looked up again in ipcache (the
 * tuple's daddr for EGRESS, saddr for INGRESS). Because of the ownership
 * rule, the endpoint at hand IS the entry's endpoint, so its current flags
 * are used: a direction it does not enforce is allowed. Either way the
 * entry takes the current revision. If allowed, it also takes a refreshed
 * rule_id and loses PAL_CT_REVOKED; if denied it is marked PAL_CT_REVOKED,
 * or, when the endpoint audits that direction, an AUDIT event (reason
 * POLICY_REVOKED) is sent, the entry is marked PAL_CT_AUDITED and the packet
 * passes. A revoked entry drops every packet that hits it, in both
 * directions, until a later revision allows it again; it is not deleted,
 * because then a retransmission from the peer, at a hook that does not
 * enforce, would be taken for a new connection and revive it. Idle revoked
 * entries expire like any other. So a revoked connection is cut at its next
 * packet either way and stays cut, while unrelated connections continue.
 * The agent therefore bumps policy_rev after every change of policy entries,
 * ipcache, endpoint identities or endpoint flags.
 */
#ifndef PALISADE_LIB_CONNTRACK_H
#define PALISADE_LIB_CONNTRACK_H

#include "maps.h"
#include "parse.h"

static __always_inline void pal_ct_tuple(const struct pal_pkt *pkt, __u8 dir, struct pal_ct_key *key)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->protocol = pkt->protocol;
	key->dir = dir;
	key->pad = 0;
}

static __always_inline void pal_ct_reverse(const struct pal_pkt *pkt, __u8 dir, struct pal_ct_key *key)
{
	key->saddr = pkt->daddr;
	key->daddr = pkt->saddr;
	key->sport = pkt->dport;
	key->dport = pkt->sport;
	key->protocol = pkt->protocol;
	key->dir = dir;
	key->pad = 0;
}

/* Lookup that applies the ownership rule. */
static __always_inline struct pal_ct_value *pal_ct_lookup(const struct pal_ct_key *key, __u16 ep_id)
{
	struct pal_ct_value *val = bpf_map_lookup_elem(&pal_ct, key);

	if (val && val->ep_id != ep_id)
		return NULL;
	return val;
}

/*
 * Whether an ICMP error belongs to a connection of the endpoint: the datagram
 * it quotes crossed this endpoint the other way (so at a hook of direction
 * dir, it is an entry of direction !dir, or the reply of one of direction
 * dir). A revoked connection has no related traffic either.
 */
static __always_inline int pal_ct_related(const struct pal_pkt *pkt, __u8 dir, __u16 ep_id)
{
	struct pal_ct_key key = {
		.saddr = pkt->inner_saddr,
		.daddr = pkt->inner_daddr,
		.sport = pkt->inner_sport,
		.dport = pkt->inner_dport,
		.protocol = pkt->inner_protocol,
		.dir = dir == PAL_DIR_EGRESS ? PAL_DIR_INGRESS : PAL_DIR_EGRESS,
	};
	struct pal_ct_value *ct;

	if (!pkt->icmp_error)
		return 0;
	ct = pal_ct_lookup(&key, ep_id);
	if (!ct) {
		key.saddr = pkt->inner_daddr;
		key.daddr = pkt->inner_saddr;
		key.sport = pkt->inner_dport;
		key.dport = pkt->inner_sport;
		key.dir = dir;
		ct = pal_ct_lookup(&key, ep_id);
	}
	return ct && !(ct->flags & PAL_CT_REVOKED);
}

/* Accounts one packet on an entry at time now (bpf_ktime_get_ns()). */
static __always_inline void pal_ct_account(struct pal_ct_value *ct, __u32 len, __u8 tcp_flags,
					   int reply, __u64 now)
{
	ct->last_seen_ns = now;
	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, len);
	if (reply && !(ct->flags & PAL_CT_SEEN_REPLY))
		ct->flags |= PAL_CT_SEEN_REPLY;
	if ((tcp_flags & (PAL_TCP_FIN | PAL_TCP_RST)) && !(ct->flags & PAL_CT_CLOSING))
		ct->flags |= PAL_CT_CLOSING;
}

#endif
