/* The overlay between nodes: see abi/tunnel.h and bpf/overlay.c. */
#ifndef PALISADE_LIB_TUNNEL_H
#define PALISADE_LIB_TUNNEL_H

#include "maps.h"

/* The node hosting addr (longest-prefix match), or NULL for none. */
static __always_inline const struct pal_tunnel_value *pal_tunnel_lookup(__be32 addr)
{
	struct pal_ipcache_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&pal_tunnel, &key);
}

/* The identity from_overlay left in skb->mark, or 0 when there is none. */
static __always_inline __u32 pal_carried_identity(const struct __sk_buff *skb)
{
	if ((skb->mark & PAL_MARK_MAGIC_MASK) != PAL_MARK_IDENTITY)
		return 0;
	return skb->mark & PAL_TUNNEL_ID_MAX;
}

#endif
