/*
 * IPv4 fragments.
 *
 * Only the first fragment (MF set, offset 0) carries the L4 header. It is
 * evaluated like any packet, and when it passes, its ports are recorded in
 * pal_frag under (saddr, daddr, IP id, protocol). A later fragment (offset
 * > 0) takes its ports from there and then goes through conntrack and
 * policy like the first one did (normally hitting the entry the first
 * fragment created). A later fragment whose first fragment was not seen
 * (reordered before it, or its first fragment was dropped) is dropped with
 * FRAG_NO_HEADER: without ports it cannot be matched against port policy.
 * Entries are not deleted at the last fragment (fragments can be reordered
 * and the same datagram crosses two hooks on same-node traffic); the LRU
 * map ages them out.
 */
#ifndef PALISADE_LIB_FRAG_H
#define PALISADE_LIB_FRAG_H

#include "maps.h"
#include "parse.h"

static __always_inline void pal_frag_key(const struct pal_pkt *pkt, struct pal_frag_key *key)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->id = pkt->frag_id;
	key->protocol = pkt->protocol;
	key->pad = 0;
}

/* Fills the ports of a later fragment; returns 0 or PAL_REASON_FRAG_NO_HEADER. */
static __always_inline int pal_frag_lookup(struct pal_pkt *pkt)
{
	struct pal_frag_key key;
	struct pal_frag_value *val;

	pal_frag_key(pkt, &key);
	val = bpf_map_lookup_elem(&pal_frag, &key);
	if (!val)
		return PAL_REASON_FRAG_NO_HEADER;
	pkt->sport = val->sport;
	pkt->dport = val->dport;
	return 0;
}

/* Records the ports of a first fragment that passed. */
static __always_inline void pal_frag_record(const struct pal_pkt *pkt)
{
	struct pal_frag_key key;
	struct pal_frag_value val = { .sport = pkt->sport, .dport = pkt->dport };

	if (pkt->frag != PAL_FRAG_FIRST || !pkt->has_ports)
		return;
	pal_frag_key(pkt, &key);
	bpf_map_update_elem(&pal_frag, &key, &val, BPF_ANY);
}

#endif
