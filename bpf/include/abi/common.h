/* Fixed-width types for the C/Rust ABI; usable from BPF C and host C. */
#ifndef PALISADE_ABI_COMMON_H
#define PALISADE_ABI_COMMON_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int16_t __s16;
typedef int32_t __s32;
typedef uint16_t __be16;
typedef uint32_t __be32;
#endif

#define PAL_ABI_ASSERT_SIZE(type, size) \
	_Static_assert(sizeof(type) == (size), "ABI size of " #type " changed")

#endif
