/* ipcache: longest-prefix match from an IPv4 address to a security identity. */
#ifndef PALISADE_ABI_IPCACHE_H
#define PALISADE_ABI_IPCACHE_H
#include "common.h"

struct pal_ipcache_key {
	__u32 prefixlen; /* LPM prefix length in bits over addr */
	__be32 addr;     /* network byte order */
};
PAL_ABI_ASSERT_SIZE(struct pal_ipcache_key, 8);

struct pal_ipcache_value {
	__u32 identity;
	__u32 flags; /* reserved for the tunnel endpoint and encryption key (later issues) */
};
PAL_ABI_ASSERT_SIZE(struct pal_ipcache_value, 8);

#endif
