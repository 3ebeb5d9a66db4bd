/* Verdict reason codes, generated from reasons.def (see there). */
#ifndef PALISADE_ABI_REASONS_H
#define PALISADE_ABI_REASONS_H

enum pal_reason {
#define REASON(name, code, text) PAL_REASON_##name = (code),
#include "reasons.def"
#undef REASON
};

/* Counters are indexed by -reason; this bounds the metrics array. */
#define PAL_REASON_MAX 64

#endif
