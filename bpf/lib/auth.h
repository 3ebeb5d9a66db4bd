/* Mutual authentication in the datapath: see abi/auth.h. */
#ifndef PALISADE_LIB_AUTH_H
#define PALISADE_LIB_AUTH_H

#include "maps.h"
#include "tunnel.h"

/*
 * The node hosting addr as the auth map names it: the underlay address of
 * the node pal_tunnel routes it to (when the packet came through the
 * overlay, or is going into it: via_tunnel), 0 for an endpoint of this
 * node, else PAL_AUTH_NODE_UNKNOWN (never authenticated).
 */
static __always_inline __be32 pal_auth_node(__be32 addr, int via_tunnel)
{
	const struct pal_tunnel_value *node = pal_tunnel_lookup(addr);
	struct pal_ipcache_key key = { .prefixlen = 32, .addr = addr };
	const struct pal_ipcache_value *local;

	if (node)
		return via_tunnel ? node->endpoint : PAL_AUTH_NODE_UNKNOWN;
	local = bpf_map_lookup_elem(&pal_ipcache, &key);
	if (local && (local->flags & PAL_IPCACHE_LOCAL_ENDPOINT))
		return 0;
	return PAL_AUTH_NODE_UNKNOWN;
}

/*
 * Whether the pair (local, remote on node, auth_type) is authenticated now:
 * PAL_REASON_FORWARDED, or PAL_REASON_AUTH_REQUIRED when the agents have
 * not authenticated it (or the entry expired).
 */
static __always_inline int pal_auth_check(__u32 local, __u32 remote, __be32 node, __u8 auth_type)
{
	struct pal_auth_key key = {
		.local_identity = local,
		.remote_identity = remote,
		.remote_node = node,
		.auth_type = auth_type,
	};
	const struct pal_auth_value *val = bpf_map_lookup_elem(&pal_auth, &key);

	if (val && val->expires_ns > bpf_ktime_get_boot_ns())
		return PAL_REASON_FORWARDED;
	return PAL_REASON_AUTH_REQUIRED;
}

#endif
