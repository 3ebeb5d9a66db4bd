/* Datapath-wide state the agent writes (a one-entry array). */
#ifndef PALISADE_ABI_STATE_H
#define PALISADE_ABI_STATE_H
#include "common.h"

struct pal_state {
	/*
	 * Bumped by the agent after every change of policy entries, ipcache,
	 * endpoint identities or endpoint flags; a connection-tracking entry
	 * admitted at an older revision is checked against policy again on its
	 * next packet (see lib/conntrack.h).
	 */
	__u32 policy_rev;
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_state, 8);

#endif
