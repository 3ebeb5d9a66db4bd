/*
 * Policy map: one LPM trie for all endpoints.
 *
 * The fixed part of the key (ep_id, direction, pad, identity) is always
 * matched in full; protocol and destination port are matched by prefix, so
 * one entry can stand for "any protocol", "any port of TCP" or an aligned
 * port block (port ranges are split into such blocks by the compiler).
 * identity 0 is the wildcard identity: the datapath looks up the exact
 * identity first and falls back to identity 0 on a miss. The compiler
 * resolves deny precedence so that this two-step lookup is exact.
 */
#ifndef PALISADE_ABI_POLICY_H
#define PALISADE_ABI_POLICY_H
#include "common.h"

#define PAL_DIR_INGRESS 0
#define PAL_DIR_EGRESS 1

/* Bits of the key that are always matched: ep_id, dir, pad, identity. */
#define PAL_POLICY_FIXED_PREFIX 64
/* Fixed part + protocol + pad2: a key that matches every port of one protocol. */
#define PAL_POLICY_PROTO_PREFIX 80
/* A key that matches one exact port. */
#define PAL_POLICY_FULL_PREFIX 96

struct pal_policy_key {
	__u32 prefixlen;
	__u16 ep_id;
	__u8 dir;      /* PAL_DIR_* */
	__u8 pad;
	__u32 identity; /* remote identity; 0 = any */
	__u8 protocol;  /* IPPROTO_*; ignored below PAL_POLICY_PROTO_PREFIX */
	__u8 pad2;
	__be16 dport;   /* network byte order so that prefixes are port blocks */
};
PAL_ABI_ASSERT_SIZE(struct pal_policy_key, 16);

/* The entry denies (a deny rule); without it the entry allows. */
#define PAL_POLICY_DENY (1 << 0)

struct pal_policy_value {
	__u8 flags;     /* PAL_POLICY_* */
	__u8 auth_type; /* 0 = none, else PAL_AUTH_TYPE_* (abi/auth.h) */
	__u16 pad;
	__u32 rule_id;  /* agent-side index of the rule that produced the entry, for flow events */
};
PAL_ABI_ASSERT_SIZE(struct pal_policy_value, 8);

#endif
