// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Attach point: palisade_vxlan, the node's VXLAN device in external
 * (collect_md) mode. The kernel routes every other node's pod CIDR into it.
 *
 *   to_overlay:   TC egress = packets leaving for another node. Picks the
 *                 node hosting the destination (pal_tunnel) as the outer
 *                 destination and puts the source identity (from the
 *                 ipcache: a local pod's, or host for the node itself) in
 *                 the VNI.
 *   from_overlay: TC ingress = packets arriving from another node, already
 *                 decapsulated. Accepts a packet only from the node that
 *                 hosts its inner source address, and only for an address
 *                 no other node hosts; hands the carried identity to
 *                 to_endpoint in skb->mark (abi/tunnel.h).
 *
 * The identity travels with the packet, decided by the node that hosts the
 * source: a receiver never attributes a packet to a stale ipcache entry of
 * a reused address. Drops are counted and reported like the endpoint
 * programs' (observation points PAL_OBS_TO_OVERLAY / PAL_OBS_FROM_OVERLAY).
 */
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "parse.h"
#include "ipcache.h"
#include "events.h"
#include "tunnel.h"
#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PAL_IDENTITY_HOST 1
#define PAL_IDENTITY_REMOTE_NODE 6
#define PAL_TUNNEL_TTL 64

SEC("classifier") /* aya 0.14 knows "classifier", not libbpf's "tc" */
int to_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	const struct pal_tunnel_value *dst;
	struct pal_pkt pkt = {};
	struct pal_event ev;
	__u32 identity = 0;
	int ret;

	ret = pal_parse(skb, &pkt);
	if (ret == PAL_PARSE_ARP)
		ret = PAL_REASON_UNSUPPORTED_L3;
	if (ret == 0) {
		identity = pal_ipcache_identity(pkt.saddr);
		/* Node-local (CIDR) identities mean nothing to another node. */
		if (identity > PAL_TUNNEL_ID_MAX)
			identity = PAL_IDENTITY_WORLD;
		dst = pal_tunnel_lookup(pkt.daddr);
		if (!dst) {
			ret = PAL_REASON_NO_TUNNEL_ENDPOINT;
		} else {
			key.remote_ipv4 = bpf_ntohl(dst->endpoint);
			key.tunnel_id = identity;
			key.tunnel_ttl = PAL_TUNNEL_TTL;
			if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
				ret = PAL_REASON_TUNNEL_INVALID;
		}
	}
	if (ret < 0) {
		pal_event_init(&ev, skb, PAL_OBS_TO_OVERLAY, &pkt, NULL, identity,
			       bpf_ktime_get_ns(), 0);
		return pal_drop(skb, &ev, ret);
	}
	return pal_pass(skb, PAL_OBS_TO_OVERLAY);
}

SEC("classifier") /* aya 0.14 knows "classifier", not libbpf's "tc" */
int from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	const struct pal_tunnel_value *src;
	struct pal_pkt pkt = {};
	struct pal_event ev;
	__u32 identity = 0;
	int ret;

	ret = pal_parse(skb, &pkt);
	if (ret == PAL_PARSE_ARP)
		ret = PAL_REASON_UNSUPPORTED_L3;
	if (ret == 0 && bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		ret = PAL_REASON_TUNNEL_INVALID;
	if (ret == 0) {
		identity = key.tunnel_id & PAL_TUNNEL_ID_MAX;
		if (identity == 0 || key.tunnel_id > PAL_TUNNEL_ID_MAX)
			ret = PAL_REASON_TUNNEL_INVALID;
	}
	if (ret == 0) {
		src = pal_tunnel_lookup(pkt.saddr);
		if (!src || src->endpoint != bpf_htonl(key.remote_ipv4))
			ret = PAL_REASON_TUNNEL_SOURCE_SPOOFED;
		else if (pal_tunnel_lookup(pkt.daddr))
			ret = PAL_REASON_TUNNEL_MISDIRECTED;
	}
	if (ret < 0) {
		pal_event_init(&ev, skb, PAL_OBS_FROM_OVERLAY, &pkt, NULL, identity,
			       bpf_ktime_get_ns(), 0);
		return pal_drop(skb, &ev, ret);
	}

	/* Another node's "host" is this node's "remote-node". */
	if (identity == PAL_IDENTITY_HOST)
		identity = PAL_IDENTITY_REMOTE_NODE;
	skb->mark = PAL_MARK_IDENTITY | identity;
	/*
	 * The inner destination MAC is the sending device's own: without this
	 * the stack would take the frame for another host and drop it.
	 */
	bpf_skb_change_type(skb, PACKET_HOST);
	return pal_pass(skb, PAL_OBS_FROM_OVERLAY);
}
