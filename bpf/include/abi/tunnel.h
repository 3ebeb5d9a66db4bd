/*
 * The overlay between nodes (VXLAN in external mode, see bpf/overlay.c):
 * which node hosts an address, and how the source identity travels.
 */
#ifndef PALISADE_ABI_TUNNEL_H
#define PALISADE_ABI_TUNNEL_H
#include "common.h"

/*
 * pal_tunnel is an LPM trie keyed like the ipcache (struct pal_ipcache_key):
 * every other node's pod CIDR and underlay addresses map to that node's
 * underlay address, the outer destination of packets for them and the only
 * outer source accepted for packets from them.
 */
struct pal_tunnel_value {
	__be32 endpoint; /* the node's underlay address, network byte order */
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_tunnel_value, 8);

/* The VXLAN network identifier (24 bits) carries the source identity. */
#define PAL_TUNNEL_ID_MAX 0x00ffffff

/*
 * from_overlay hands the carried identity to to_endpoint in skb->mark:
 * the top byte is PAL_MARK_IDENTITY, the low 24 bits the identity. The mark
 * never leaves the node (a veth into a pod namespace scrubs it).
 */
#define PAL_MARK_MAGIC_MASK 0xff000000
#define PAL_MARK_IDENTITY 0xa5000000

#endif
