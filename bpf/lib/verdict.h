/*
 * Verdicts of the TC programs: pass or drop a packet, counted under its
 * reason and observation point, with the event template every drop sends.
 */
#ifndef PALISADE_LIB_VERDICT_H
#define PALISADE_LIB_VERDICT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include "maps.h"
#include "parse.h"
#include "events.h"

static __always_inline int pal_drop(struct __sk_buff *skb, struct pal_event *ev, int reason)
{
	pal_metrics_count(reason, ev->observation, skb->len);
	pal_emit(ev, PAL_EVENT_DROP, reason);
	return TC_ACT_SHOT;
}

static __always_inline int pal_pass(struct __sk_buff *skb, __u8 obs)
{
	pal_metrics_count(PAL_REASON_FORWARDED, obs, skb->len);
	return TC_ACT_OK;
}

/*
 * Fills the event template of this packet. Only the paths that may send an
 * event (drops, new flows, re-evaluations) pay for it; established traffic
 * never touches it. remote is the identity of the peer of the endpoint ep
 * (without an endpoint: of the source).
 */
static __always_inline void pal_event_init(struct pal_event *ev, const struct __sk_buff *skb,
					   __u8 obs, const struct pal_pkt *pkt,
					   const struct pal_endpoint_info *ep, __u32 remote,
					   __u64 now, __u32 rev)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->timestamp_ns = now;
	ev->observation = obs;
	ev->ifindex = skb->ifindex;
	ev->ethertype = pkt->ethertype;
	ev->protocol = pkt->protocol;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	ev->policy_rev = rev;
	if (!ep) {
		ev->src_identity = remote;
		return;
	}
	ev->ep_id = ep->ep_id;
	if (obs == PAL_OBS_FROM_ENDPOINT) {
		ev->src_identity = ep->identity;
		ev->dst_identity = remote;
	} else {
		ev->src_identity = remote;
		ev->dst_identity = ep->identity;
	}
}

#endif
