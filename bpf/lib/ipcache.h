/* ipcache: remote address -> security identity. */
#ifndef PALISADE_LIB_IPCACHE_H
#define PALISADE_LIB_IPCACHE_H

#include "maps.h"

/* Reserved identity of everything outside the cluster. */
#define PAL_IDENTITY_WORLD 2

/* Longest-prefix match of addr; a miss is the world identity. */
static __always_inline __u32 pal_ipcache_identity(__be32 addr)
{
	struct pal_ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct pal_ipcache_value *val = bpf_map_lookup_elem(&pal_ipcache, &key);

	return val ? val->identity : PAL_IDENTITY_WORLD;
}

#endif
