// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Attach point: the host side of a pod's veth pair.
 *
 *   from_endpoint: TC ingress of the host veth = packets leaving the pod
 *                  = the endpoint's EGRESS policy.
 *   to_endpoint:   TC egress of the host veth = packets entering the pod
 *                  = the endpoint's INGRESS policy.
 *
 * IPv4 only for now; ARP passes, every other ethertype is dropped. Verdicts
 * are TC_ACT_OK (normal kernel routing continues) or TC_ACT_SHOT; every
 * packet is counted in pal_metrics under its reason, every drop is reported
 * on pal_events. Conntrack and revocation: lib/conntrack.h; fragments:
 * lib/frag.h; policy lookup: lib/policy.h. A packet that came from another
 * node through the overlay carries its source identity (lib/tunnel.h),
 * which wins over the ipcache. An allowing entry that requires mutual
 * authentication admits a connection only once the agents authenticated
 * the pair (lib/auth.h); until then its packets are dropped with
 * AUTH_REQUIRED, and each drop event is the agent's signal to authenticate.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "ipcache.h"
#include "policy.h"
#include "conntrack.h"
#include "frag.h"
#include "events.h"
#include "tunnel.h"
#include "auth.h"
#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline __u32 pal_policy_rev(void)
{
	__u32 zero = 0;
	struct pal_state *st = bpf_map_lookup_elem(&pal_state, &zero);

	return st ? st->policy_rev : 0;
}

/*
 * The authentication an allowed connection of endpoint ep with remote
 * (at peer_addr) still needs: PAL_REASON_FORWARDED when its entry requires
 * none or the pair is authenticated, else PAL_REASON_AUTH_REQUIRED. The
 * event carries the pair's auth type and node, for the agent. via_tunnel:
 * the packet goes into the overlay (egress) or its identity came through
 * it; an ingress packet from another node's address that did not come
 * through the overlay is never authenticated.
 */
static __always_inline int pal_authenticated(const struct pal_endpoint_info *ep, __u32 remote,
					     __be32 peer_addr, __u8 auth_type, int via_tunnel,
					     struct pal_event *ev)
{
	if (!auth_type)
		return PAL_REASON_FORWARDED;
	ev->auth_type = auth_type;
	ev->remote_node = pal_auth_node(peer_addr, via_tunnel);
	return pal_auth_check(ep->identity, remote, ev->remote_node, auth_type);
}

/*
 * Re-evaluates a CT entry admitted at an older policy revision (see
 * lib/conntrack.h), or one waiting for authentication: sets or clears
 * PAL_CT_REVOKED and PAL_CT_AUTH_PENDING (or, in audit mode,
 * PAL_CT_AUDITED) and stamps the current revision.
 */
static __always_inline void pal_ct_reevaluate(const struct __sk_buff *skb,
					      const struct pal_endpoint_info *ep,
					      const struct pal_ct_key *key,
					      struct pal_ct_value *ct, struct pal_event *ev,
					      __u32 rev)
{
	__u32 identity, rule_id = 0;
	__u8 auth_type = 0;
	int verdict = PAL_REASON_FORWARDED;

	if (ep->flags & pal_enforce_flag(key->dir)) {
		identity = ev->observation == PAL_OBS_TO_ENDPOINT ? pal_carried_identity(skb) : 0;
		if (identity)
			ct->flags |= PAL_CT_TUNNEL_IDENTITY;
		else if (ct->flags & PAL_CT_TUNNEL_IDENTITY)
			identity = ct->remote_identity;
		else
			identity = pal_ipcache_identity(key->dir == PAL_DIR_EGRESS ? key->daddr
										  : key->saddr);
		verdict = pal_policy_verdict(ct->ep_id, key->dir, identity, key->protocol,
					     key->dport, &rule_id, &auth_type);
		if (verdict == PAL_REASON_FORWARDED)
			verdict = pal_authenticated(ep, identity,
						    key->dir == PAL_DIR_EGRESS ? key->daddr
									       : key->saddr,
						    auth_type,
						    key->dir == PAL_DIR_EGRESS ||
							    (ct->flags & PAL_CT_TUNNEL_IDENTITY),
						    ev);
		ct->remote_identity = identity;
		if (ev->observation == PAL_OBS_FROM_ENDPOINT)
			ev->dst_identity = identity;
		else
			ev->src_identity = identity;
	}
	ev->rule_id = rule_id;
	ct->policy_rev = rev;
	if (verdict < 0) {
		if (ep->flags & pal_audit_flag(key->dir)) {
			pal_emit(ev, PAL_EVENT_AUDIT,
				 verdict == PAL_REASON_AUTH_REQUIRED ? verdict
								     : PAL_REASON_POLICY_REVOKED);
			ct->flags = (ct->flags | PAL_CT_AUDITED) &
				    ~(PAL_CT_REVOKED | PAL_CT_AUTH_PENDING);
		} else if (verdict == PAL_REASON_AUTH_REQUIRED) {
			ct->flags |= PAL_CT_REVOKED | PAL_CT_AUTH_PENDING;
		} else {
			ct->flags = (ct->flags | PAL_CT_REVOKED) & ~PAL_CT_AUTH_PENDING;
		}
		return;
	}
	ct->flags &= ~(PAL_CT_AUDITED | PAL_CT_REVOKED | PAL_CT_AUTH_PENDING);
	ct->rule_id = rule_id;
}

/*
 * An established entry was hit: brings it to the current revision (or,
 * while it waits for authentication, checks again), then passes the packet
 * or, if the connection is revoked, drops it. The common case (current
 * revision, not revoked) is two flag checks and the counters.
 */
static __always_inline int pal_ct_established(struct __sk_buff *skb,
					      const struct pal_endpoint_info *ep,
					      const struct pal_ct_key *key,
					      struct pal_ct_value *ct, struct pal_pkt *pkt,
					      struct pal_event *ev, __u8 obs, __u32 rev, __u64 now,
					      int reply)
{
	if (ct->policy_rev != rev || (ct->flags & PAL_CT_REVOKED)) {
		pal_event_init(ev, skb, obs, pkt, ep, ct->remote_identity, now, rev);
		if (ct->policy_rev != rev || (ct->flags & PAL_CT_AUTH_PENDING))
			pal_ct_reevaluate(skb, ep, key, ct, ev, rev);
		if (ct->flags & PAL_CT_REVOKED) {
			ct->last_seen_ns = now;
			return pal_drop(skb, ev,
					(ct->flags & PAL_CT_AUTH_PENDING) ? PAL_REASON_AUTH_REQUIRED
									  : PAL_REASON_POLICY_REVOKED);
		}
	}
	pal_ct_account(ct, skb->len, pkt->tcp_flags, reply, now);
	pal_frag_record(pkt);
	return pal_pass(skb, obs);
}

static __always_inline int pal_handle(struct __sk_buff *skb, const __u8 obs)
{
	const __u8 dir = obs == PAL_OBS_FROM_ENDPOINT ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	const __u8 rdir = dir == PAL_DIR_EGRESS ? PAL_DIR_INGRESS : PAL_DIR_EGRESS;
	struct pal_endpoint_key ep_key = { .ifindex = skb->ifindex };
	struct pal_endpoint_info *ep;
	struct pal_pkt pkt = {};
	struct pal_event ev;
	struct pal_ct_key fwd, rev_key;
	struct pal_ct_value *ct;
	struct pal_ct_value new_ct = {};
	__u32 remote, rule_id = 0, rev;
	__u8 auth_type = 0;
	__u64 now;
	int ret, verdict;

	ret = pal_parse(skb, &pkt);
	now = bpf_ktime_get_ns();

	/* Fail closed: an interface without an endpoint passes nothing. */
	ep = bpf_map_lookup_elem(&pal_endpoints, &ep_key);
	if (!ep) {
		pal_event_init(&ev, skb, obs, &pkt, NULL, 0, now, 0);
		return pal_drop(skb, &ev, PAL_REASON_UNKNOWN_ENDPOINT);
	}

	if (ret == PAL_PARSE_ARP)
		return pal_pass(skb, obs);
	if (ret < 0) {
		pal_event_init(&ev, skb, obs, &pkt, ep, 0, now, 0);
		return pal_drop(skb, &ev, ret);
	}

	if (obs == PAL_OBS_FROM_ENDPOINT && pkt.saddr != ep->ipv4) {
		pal_event_init(&ev, skb, obs, &pkt, ep, 0, now, 0);
		return pal_drop(skb, &ev, PAL_REASON_SOURCE_SPOOFED);
	}

	if (pkt.frag == PAL_FRAG_LATER && pkt.has_ports) {
		ret = pal_frag_lookup(&pkt);
		if (ret < 0) {
			pal_event_init(&ev, skb, obs, &pkt, ep, 0, now, 0);
			return pal_drop(skb, &ev, ret);
		}
	}

	rev = pal_policy_rev();

	/*
	 * 1. Established, forward direction. A bare SYN on a closing entry is
	 * a new connection reusing the tuple: it goes through policy (and
	 * authentication) again instead of inheriting the old verdict.
	 */
	pal_ct_tuple(&pkt, dir, &fwd);
	ct = pal_ct_lookup(&fwd, ep->ep_id);
	if (ct && (ct->flags & PAL_CT_CLOSING) &&
	    (pkt.tcp_flags & (PAL_TCP_SYN | PAL_TCP_ACK)) == PAL_TCP_SYN) {
		bpf_map_delete_elem(&pal_ct, &fwd);
		ct = NULL;
	}
	if (ct)
		return pal_ct_established(skb, ep, &fwd, ct, &pkt, &ev, obs, rev, now, 0);

	/* 2. Reply of a connection admitted in the other direction. */
	pal_ct_reverse(&pkt, rdir, &rev_key);
	ct = pal_ct_lookup(&rev_key, ep->ep_id);
	if (ct)
		return pal_ct_established(skb, ep, &rev_key, ct, &pkt, &ev, obs, rev, now, 1);

	/*
	 * 3. An ICMP error about a connection of this endpoint (port
	 * unreachable, fragmentation needed, ...) passes like its replies do.
	 */
	if (pal_ct_related(&pkt, dir, ep->ep_id))
		return pal_pass(skb, obs);

	/*
	 * 4. New connection: the only path that needs the peer's identity,
	 * the one the overlay carried or else the ipcache's.
	 */
	remote = obs == PAL_OBS_TO_ENDPOINT ? pal_carried_identity(skb) : 0;
	if (remote)
		new_ct.flags = PAL_CT_TUNNEL_IDENTITY;
	else
		remote = pal_ipcache_identity(obs == PAL_OBS_FROM_ENDPOINT ? pkt.daddr : pkt.saddr);
	pal_event_init(&ev, skb, obs, &pkt, ep, remote, now, rev);
	verdict = PAL_REASON_FORWARDED;
	if (ep->flags & pal_enforce_flag(dir)) {
		verdict = pal_policy_verdict(ep->ep_id, dir, remote, pkt.protocol, pkt.dport,
					     &rule_id, &auth_type);
		if (verdict == PAL_REASON_FORWARDED)
			verdict = pal_authenticated(ep, remote,
						    obs == PAL_OBS_FROM_ENDPOINT ? pkt.daddr
										 : pkt.saddr,
						    auth_type,
						    obs == PAL_OBS_FROM_ENDPOINT ||
							    (new_ct.flags & PAL_CT_TUNNEL_IDENTITY),
						    &ev);
	}
	ev.rule_id = rule_id;
	if (verdict < 0) {
		if (!(ep->flags & pal_audit_flag(dir)))
			return pal_drop(skb, &ev, verdict);
		new_ct.flags |= PAL_CT_AUDITED;
	}

	new_ct.created_ns = now;
	new_ct.last_seen_ns = now;
	new_ct.packets = 1;
	new_ct.bytes = skb->len;
	new_ct.policy_rev = rev;
	new_ct.remote_identity = remote;
	new_ct.ep_id = ep->ep_id;
	new_ct.rule_id = rule_id;
	if (pkt.tcp_flags & (PAL_TCP_FIN | PAL_TCP_RST))
		new_ct.flags |= PAL_CT_CLOSING;
	if (bpf_map_update_elem(&pal_ct, &fwd, &new_ct, BPF_ANY) < 0)
		return pal_drop(skb, &ev, PAL_REASON_CT_MAP_FULL);

	if (verdict < 0)
		pal_emit(&ev, PAL_EVENT_AUDIT, verdict);
	else
		pal_emit(&ev, PAL_EVENT_FLOW_NEW, PAL_REASON_FORWARDED);
	pal_frag_record(&pkt);
	return pal_pass(skb, obs);
}

SEC("classifier") /* aya 0.14 knows "classifier", not libbpf's "tc" */
int from_endpoint(struct __sk_buff *skb)
{
	return pal_handle(skb, PAL_OBS_FROM_ENDPOINT);
}

SEC("classifier") /* aya 0.14 knows "classifier", not libbpf's "tc" */
int to_endpoint(struct __sk_buff *skb)
{
	return pal_handle(skb, PAL_OBS_TO_ENDPOINT);
}
