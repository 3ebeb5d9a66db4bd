/* Endpoint map: host-side veth ifindex -> the endpoint behind it. */
#ifndef PALISADE_ABI_ENDPOINT_H
#define PALISADE_ABI_ENDPOINT_H
#include "common.h"

/* Policy is enforced for traffic entering the endpoint (its ingress). */
#define PAL_EP_ENFORCE_INGRESS (1 << 0)
/* Policy is enforced for traffic leaving the endpoint (its egress). */
#define PAL_EP_ENFORCE_EGRESS (1 << 1)
/* Policy denials are reported as "audit" and the packet passes. */
#define PAL_EP_AUDIT_INGRESS (1 << 2)
#define PAL_EP_AUDIT_EGRESS (1 << 3)

struct pal_endpoint_key {
	__u32 ifindex; /* host-side interface index */
};
PAL_ABI_ASSERT_SIZE(struct pal_endpoint_key, 4);

struct pal_endpoint_info {
	__u32 identity; /* security identity of the endpoint */
	__be32 ipv4;    /* the endpoint's address, network byte order */
	__u16 ep_id;    /* endpoint id, also the policy-map key prefix */
	__u16 flags;    /* PAL_EP_* */
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_endpoint_info, 16);

#endif
