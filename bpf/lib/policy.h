/* Policy verdicts: the two-step LPM lookup over pal_policy. */
#ifndef PALISADE_LIB_POLICY_H
#define PALISADE_LIB_POLICY_H

#include "maps.h"

static __always_inline __u16 pal_enforce_flag(__u8 dir)
{
	return dir == PAL_DIR_EGRESS ? PAL_EP_ENFORCE_EGRESS : PAL_EP_ENFORCE_INGRESS;
}

static __always_inline __u16 pal_audit_flag(__u8 dir)
{
	return dir == PAL_DIR_EGRESS ? PAL_EP_AUDIT_EGRESS : PAL_EP_AUDIT_INGRESS;
}

/*
 * Policy of endpoint ep_id in direction dir for a remote identity, protocol
 * and destination port (network byte order). Looks up the exact identity
 * first; only if that misses, the wildcard identity 0 (the compiler makes
 * this exact by copying wildcard denies into exact-identity entries).
 * Returns PAL_REASON_FORWARDED (allowed), PAL_REASON_POLICY_DENY_RULE (a deny
 * entry matched) or PAL_REASON_POLICY_DENIED (no entry). *rule_id is set to
 * the matching entry's rule (0 on a miss), *auth_type to the authentication
 * an allowing entry requires (0 for none; see lib/auth.h).
 */
static __always_inline int pal_policy_verdict(__u16 ep_id, __u8 dir, __u32 identity,
					      __u8 protocol, __be16 dport, __u32 *rule_id,
					      __u8 *auth_type)
{
	struct pal_policy_key key = {
		.prefixlen = PAL_POLICY_FULL_PREFIX,
		.ep_id = ep_id,
		.dir = dir,
		.identity = identity,
		.protocol = protocol,
		.dport = dport,
	};
	struct pal_policy_value *val = bpf_map_lookup_elem(&pal_policy, &key);

	if (!val) {
		key.identity = 0;
		val = bpf_map_lookup_elem(&pal_policy, &key);
	}
	*auth_type = 0;
	if (!val) {
		*rule_id = 0;
		return PAL_REASON_POLICY_DENIED;
	}
	*rule_id = val->rule_id;
	if (val->flags & PAL_POLICY_DENY)
		return PAL_REASON_POLICY_DENY_RULE;
	*auth_type = val->auth_type;
	return PAL_REASON_FORWARDED;
}

#endif
