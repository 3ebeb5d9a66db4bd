/*
 * Maps of runtime enforcement (runtime.c). Names are ABI: the agent opens
 * them by name and pins them under its bpf root, so that a restarted agent
 * finds the process table and the selectors in force.
 */
#ifndef PALISADE_LIB_RUNTIME_MAPS_H
#define PALISADE_LIB_RUNTIME_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi/runtime.h"

#define PAL_RT_MAX_PROCS 32768
#define PAL_RT_EVENTS_BYTES (8 << 20)
#define PAL_RT_MAX_NUM 65536
#define PAL_RT_MAX_STR 16384
#define PAL_RT_MAX_RATE 16384
#define PAL_RT_SYSCALL_SLOTS 14
#define PAL_RT_MAX_SYSCALLS 512
#define PAL_RT_MAX_HEADS 16
#define PAL_RT_HEAD_BYTES 8

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, struct pal_proc);
	__uint(max_entries, PAL_RT_MAX_PROCS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_hook);
	__uint(max_entries, PAL_RT_MAX_HOOKS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_hooks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_filter);
	__uint(max_entries, PAL_RT_MAX_FILTERS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_sel);
	__uint(max_entries, PAL_RT_MAX_SELS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_sels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_rt_num_key);
	__type(value, __u8);
	__uint(max_entries, PAL_RT_MAX_NUM);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_num SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_rt_str_key);
	__type(value, __u8);
	__uint(max_entries, PAL_RT_MAX_STR);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_str SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_binset);
	__uint(max_entries, PAL_RT_MAX_BINSETS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_binsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_config SEC(".maps");

/* How the hooks of a syscall run (pal_rt_syscall_hooks.via). */
#define PAL_SYSCALL_VIA_RAW 0   /* pal_sys_enter on raw_syscalls:sys_enter */
#define PAL_SYSCALL_VIA_TP 1    /* pal_sys_tp on syscalls:sys_enter_<name> */
#define PAL_SYSCALL_VIA_FENTRY 2 /* pal_sys_fentry on __x64_sys_<name> */

/* A head of the prefilter: the first bytes of a Prefix or Equal value. */
struct pal_rt_head {
	__u64 value;                    /* the bytes, little endian */
	__u64 mask;                     /* 0xff per byte that counts */
};

/*
 * Hooked syscalls: hooks[0..n) are evaluated in order for syscall nr.
 * The head prefilter (tracing-policies' head_filter): the hooks of the
 * bits of head_skip can only match when the user string in syscall
 * argument head_reg begins with one of heads[0..head_n); its first
 * PAL_RT_HEAD_BYTES bytes are read once and, when no head admits them,
 * those hooks are not run.
 */
struct pal_rt_syscall_hooks {
	__u32 n;
	__u32 via;                      /* PAL_SYSCALL_VIA_* */
	__u32 hooks[PAL_RT_SYSCALL_SLOTS];
	__u32 head_reg;
	__u32 head_skip;                /* bit i: hooks[i] */
	__u32 head_n;
	__u32 pad;
	struct pal_rt_head heads[PAL_RT_MAX_HEADS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_syscall_hooks);
	__uint(max_entries, PAL_RT_MAX_SYSCALLS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_syscalls SEC(".maps");

/* Rate limiting of Post: key -> ktime of the last event posted. */
struct pal_rt_rate_key {
	__u32 hook_id;
	__u32 sel;
	__u32 scope_id;
	__u32 pad;
	__u64 args_hash;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_rt_rate_key);
	__type(value, __u64);
	__uint(max_entries, PAL_RT_MAX_RATE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAL_RT_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PAL_RT_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_rt_counters SEC(".maps");

/* Per-CPU scratch space: too large for the 512-byte stack. */
struct pal_rt_scratch {
	struct pal_rt_hook_event ev;
	struct pal_rt_str_key skey;
	struct pal_rt_num_key nkey;
	struct pal_rt_exec_event exec;
	struct pal_rt_fork_event fork;
	struct pal_rt_exit_event exit;
	char path[PAL_RT_PATH_MAX * 2];   /* path assembly, right to left */
	char rev[PAL_RT_STR_MAX];         /* reversed string for Postfix */
	struct pal_rt_sock sock;          /* socket tuple being read or tested */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_rt_scratch);
	__uint(max_entries, 1);
} pal_rt_scratch_map SEC(".maps");

/* Hides a value from the compiler so that a following mask is kept (the
 * verifier needs to see the bound on the register actually used). */
#define pal_barrier_var(x) asm volatile("" : "+r"(x))

static __always_inline void pal_rt_count_add(__u32 idx, __u64 n)
{
	__u64 *val = bpf_map_lookup_elem(&pal_rt_counters, &idx);

	if (val)
		*val += n;
}

static __always_inline void pal_rt_count(__u32 idx)
{
	pal_rt_count_add(idx, 1);
}

static __always_inline struct pal_rt_scratch *pal_rt_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pal_rt_scratch_map, &zero);
}

#endif
