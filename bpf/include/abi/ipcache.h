/* ipcache: longest-prefix match from an IPv4 address to a security identity. */
#ifndef PALISADE_ABI_IPCACHE_H
#define PALISADE_ABI_IPCACHE_H
#include "common.h"

struct pal_ipcache_key {
	__u32 prefixlen; /* LPM prefix length in bits over addr */
	__be32 addr;     /* network byte order */
};
PAL_ABI_ASSERT_SIZE(struct pal_ipcache_key, 8);

/* The address is an endpoint on this node (the auth map's node 0). */
#define PAL_IPCACHE_LOCAL_ENDPOINT (1 << 0)

struct pal_ipcache_value {
	__u32 identity;
	__u32 flags; /* PAL_IPCACHE_* */
};
PAL_ABI_ASSERT_SIZE(struct pal_ipcache_value, 8);

#endif
