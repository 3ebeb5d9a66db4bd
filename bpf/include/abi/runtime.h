/*
 * Runtime enforcement (TracingPolicy): process tracking, hook
 * configuration, compiled selectors and the events sent to the agent.
 *
 * Selectors live in maps, never in unrolled code: a hook owns a range of
 * pal_rt_filters entries (one per filter, grouped by selector, in selector
 * order) and a range of pal_rt_sels entries (the actions of each selector).
 * Value sets (integers, addresses, strings, binaries) are LPM tries keyed
 * by a set id, so the number of values per operator is bounded only by the
 * map size.
 */
#ifndef PALISADE_ABI_RUNTIME_H
#define PALISADE_ABI_RUNTIME_H
#include "common.h"

/* Limits (sizes of fixed buffers; the compiler rejects what exceeds them). */
#define PAL_RT_MAX_ARGS 6
#define PAL_RT_STR_MAX 256            /* longest string argument read */
#define PAL_RT_STR_KEY 252            /* string bytes an LPM key holds (the
                                       * kernel caps LPM data at 256 bytes) */
#define PAL_RT_STR_AREA 1024          /* string bytes one hook event carries */
#define PAL_RT_PATH_MAX 256           /* binary path kept for exec events */
#define PAL_RT_ARGS_MAX 768           /* command-line bytes kept for exec events */
#define PAL_RT_MAX_BINSETS 128        /* matchBinaries value sets (bits in pal_proc) */
#define PAL_RT_MAX_HOOKS 1024
#define PAL_RT_MAX_FILTERS 16384
#define PAL_RT_MAX_SELS 8192
#define PAL_RT_MAX_FILTERS_PER_HOOK 512
#define PAL_RT_FOLLOW_DEPTH 16        /* ancestors walked by followForks */

/* ---- processes ---------------------------------------------------------- */

/* pal_proc.flags */
#define PAL_PROC_EXEC 0x1      /* entry made by an exec (not only a fork) */
#define PAL_PROC_PROCFS 0x2    /* entry made by the agent's /proc scan */

/*
 * One process (thread group), keyed by tgid in the LRU hash pal_procs.
 * ktime identifies the process image (exec or fork time, ns since boot): it
 * is what Tetragon's exec_id encodes.
 */
struct pal_proc {
	__u64 ktime;
	__u64 parent_ktime;
	__u64 cgroup_id;
	__u64 bin_match[2];    /* bit i: this image's binary is in binary set i */
	__u64 bin_follow[2];   /* bit i: an ancestor's binary was in set i (followChildren) */
	__u64 parent_bin[2];   /* bin_match of the parent */
	__u32 pid;
	__u32 ppid;
	__u32 nspid;
	__u32 uid;
	__u32 auid;
	__u32 flags;           /* PAL_PROC_* */
	__u32 net_ns;          /* network namespace inode (pod attribution) */
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_proc, 104);

/* ---- hooks and selectors ------------------------------------------------- */

/* pal_rt_argdesc.source: where an argument's value comes from. */
#define PAL_ARGSRC_NONE 0
#define PAL_ARGSRC_SYSCALL 1    /* syscall argument `reg` (0-5) of raw_syscalls:sys_enter */
#define PAL_ARGSRC_TP_FIELD 2   /* tracepoint record field at `offset`, `size` bytes */
#define PAL_ARGSRC_TP_DATALOC 3 /* tracepoint __data_loc string field at `offset` */
#define PAL_ARGSRC_REG 4        /* function argument `reg` (kprobe pt_regs / LSM / fentry ctx) */

/* pal_rt_argdesc.kind: how the value is read and reported. */
#define PAL_ARGKIND_INT 0       /* integer of `size` bytes (signed if PAL_ARGF_SIGNED) */
#define PAL_ARGKIND_USTR 1      /* user-space NUL-terminated string at the value */
#define PAL_ARGKIND_KSTR 2      /* kernel NUL-terminated string at the value */
#define PAL_ARGKIND_FILE 3      /* struct file *: its path */
#define PAL_ARGKIND_PATH 4      /* struct path *: the path */
#define PAL_ARGKIND_BPRM 6      /* struct linux_binprm *: the file's path */
#define PAL_ARGKIND_SOCKADDR 7  /* struct sockaddr * (user memory for PAL_ARGSRC_SYSCALL): a pal_rt_sock tuple */
#define PAL_ARGKIND_SOCK 8      /* struct sock *: a pal_rt_sock tuple */
#define PAL_ARGKIND_SKB 9       /* struct sk_buff *: a pal_rt_sock tuple */

/* pal_rt_argdesc.flags */
#define PAL_ARGF_SIGNED 0x1

struct pal_rt_argdesc {
	__u8 source;    /* PAL_ARGSRC_* */
	__u8 kind;      /* PAL_ARGKIND_* */
	__u8 size;      /* integer size in bytes (1, 2, 4, 8) */
	__u8 reg;       /* argument position */
	__u16 offset;   /* tracepoint field offset */
	__u8 flags;     /* PAL_ARGF_* */
	__u8 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_argdesc, 8);

/* pal_rt_hook.flags */
#define PAL_HOOK_ACTIVE 0x1     /* evaluate selectors (else the hook does nothing) */
#define PAL_HOOK_MONITOR 0x2    /* policy-mode monitor: report actions, do not act */

/* pal_rt_hooks[hook_id] */
struct pal_rt_hook {
	__u32 flags;            /* PAL_HOOK_* */
	__u32 first_filter;     /* index in pal_rt_filters */
	__u32 nfilters;
	__u32 first_sel;        /* index in pal_rt_sels */
	__u32 nsels;
	__u32 nargs;
	struct pal_rt_argdesc args[PAL_RT_MAX_ARGS];
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_hook, 72);

/* pal_rt_filter.kind */
#define PAL_FILT_TRUE 0         /* placeholder of a selector without filters */
#define PAL_FILT_ARG_NUM 1      /* integer arg in LPM set `set_id` (Equal, InMap, ranges) */
#define PAL_FILT_ARG_STR 2      /* string arg in LPM set (Equal: with NUL; Prefix) */
#define PAL_FILT_ARG_STR_REV 3  /* reversed string arg in LPM set (Postfix) */
#define PAL_FILT_ARG_GT 4       /* arg > value (signed if PAL_FILTF_SIGNED) */
#define PAL_FILT_ARG_LT 5       /* arg < value */
#define PAL_FILT_ARG_MASK 6     /* arg & value != 0 */
#define PAL_FILT_BINARY 7       /* process binary in binary set `aux` */
#define PAL_FILT_PARENT_BINARY 8 /* parent binary in binary set `aux` */
#define PAL_FILT_PID 9          /* tgid in LPM set (PAL_FILTF_NSPID, PAL_FILTF_FOLLOW) */
#define PAL_FILT_NAMESPACE 10   /* namespace `aux` (PAL_NS_*) inode in LPM set */
#define PAL_FILT_CAPS 11        /* capability set `aux` (PAL_CAPS_*) & value != 0 */
#define PAL_FILT_SOCK_PORT 12   /* port `aux` (PAL_SOCK_SRC/DST) of a tuple in LPM set */
#define PAL_FILT_SOCK_PRIV 13   /* port `aux` of a tuple < 1024 */
#define PAL_FILT_SOCK_ADDR 14   /* address `aux` in LPM set `set_id` (IPv4) or
                                 * `value` (IPv6); fails for non-IP families */
#define PAL_FILT_SOCK_FIELD 15  /* family/protocol/state (`aux`: PAL_SOCK_*) in LPM set */

/* pal_rt_filter.flags */
#define PAL_FILTF_NEGATE 0x1    /* Not-form: the filter matches when the test fails */
#define PAL_FILTF_SIGNED 0x2    /* compare as signed (GT/LT) */
#define PAL_FILTF_NSPID 0x4     /* matchPIDs isNamespacePID */
#define PAL_FILTF_FOLLOW 0x8    /* matchPIDs followForks / matchBinaries followChildren */
#define PAL_FILTF_INVERT 0x10   /* Not-form applied by a socket filter itself: a
                                 * missing tuple fails both forms */

/* pal_rt_filter.aux of the socket filters. */
#define PAL_SOCK_SRC 0
#define PAL_SOCK_DST 1
#define PAL_SOCK_FAMILY 2
#define PAL_SOCK_PROTOCOL 3
#define PAL_SOCK_STATE 4

/* Namespaces for PAL_FILT_NAMESPACE (aux). */
#define PAL_NS_UTS 0
#define PAL_NS_IPC 1
#define PAL_NS_MNT 2
#define PAL_NS_PID 3
#define PAL_NS_PID_FOR_CHILDREN 4
#define PAL_NS_NET 5
#define PAL_NS_TIME 6
#define PAL_NS_TIME_FOR_CHILDREN 7
#define PAL_NS_CGROUP 8
#define PAL_NS_USER 9

/* Capability sets for PAL_FILT_CAPS (aux). */
#define PAL_CAPS_EFFECTIVE 0
#define PAL_CAPS_INHERITABLE 1
#define PAL_CAPS_PERMITTED 2

/* pal_rt_filters[i]; a hook's filters are grouped by selector, in order. */
struct pal_rt_filter {
	__u16 sel;      /* selector number within the hook */
	__u8 kind;      /* PAL_FILT_* */
	__u8 flags;     /* PAL_FILTF_* */
	__u8 arg;       /* argument slot */
	__u8 aux;       /* binary set, namespace or capability set */
	__u16 pad;
	__u32 set_id;   /* value set in pal_rt_num / pal_rt_str */
	__u32 pad2;
	__u64 value;    /* GT/LT/Mask operand, capability mask */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_filter, 24);

/* pal_rt_sock.flags */
#define PAL_SOCKF_IP 0x1        /* saddr/daddr hold addresses (AF_INET, AF_INET6) */
#define PAL_SOCKF_STATE 0x2     /* state is known (struct sock) */

/*
 * The tuple of a socket argument, kept in the hook event's string area
 * (vals[i] = offset << 16 | sizeof; 0: not read, every filter fails). A
 * sockaddr gives its family, and its address and port as the source
 * (Tetragon's semantics).
 */
struct pal_rt_sock {
	__u16 family;
	__u16 protocol;
	__u16 sport;        /* host order */
	__u16 dport;        /* host order */
	__u8 state;
	__u8 flags;         /* PAL_SOCKF_* */
	__u16 pad;
	__u32 pad2;
	__u8 saddr[16];     /* IPv4: the first 4 bytes (network order) */
	__u8 daddr[16];
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_sock, 48);

/* Actions (pal_rt_sel.action, and the action reported in events). */
#define PAL_ACT_POST 0
#define PAL_ACT_NOPOST 1
#define PAL_ACT_SIGKILL 2
#define PAL_ACT_SIGNAL 3
#define PAL_ACT_OVERRIDE 4

/* Rate-limit scopes (pal_rt_sel.rate_scope). */
#define PAL_RATE_THREAD 0
#define PAL_RATE_PROCESS 1
#define PAL_RATE_GLOBAL 2

/* pal_rt_sels[first_sel + selector number] */
struct pal_rt_sel {
	__u32 action;       /* PAL_ACT_*: what is reported */
	__u32 post;         /* 1: send an event */
	__s32 signal;       /* signal to send, 0 for none */
	__s32 override;     /* return value override (negative errno), 0 for none */
	__u64 rate_ns;      /* at most one event per rate_ns per scope and args, 0: no limit */
	__u32 rate_scope;   /* PAL_RATE_* */
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_sel, 32);

/* Keys of the value-set LPM tries. The first 32 bits are the set id. */
struct pal_rt_num_key {
	__u32 prefixlen;    /* 32 + matched bits of data */
	__u32 set_id;
	__u8 data[16];      /* big-endian integer (8 bytes, sign bit flipped for
	                     * signed values) or an IPv4/IPv6 address */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_num_key, 24);

struct pal_rt_str_key {
	__u32 prefixlen;    /* 32 + 8 * bytes (Equal values include their NUL) */
	__u32 set_id;
	__u8 data[PAL_RT_STR_KEY];
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_str_key, 260);

/* pal_rt_binsets[i]: binary set i (bit i of pal_proc.bin_match). */
#define PAL_BINSET_EXACT 0
#define PAL_BINSET_PREFIX 1
#define PAL_BINSET_POSTFIX 2
struct pal_rt_binset {
	__u32 set_id;       /* in pal_rt_str */
	__u32 kind;         /* PAL_BINSET_* */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_binset, 8);

/* pal_rt_config[0]: global settings written by the agent. */
struct pal_rt_config {
	__u32 nbinsets;                 /* active entries of pal_rt_binsets */
	__u32 self_tgid;                /* the agent: never signalled */
	__u64 follow_mask[2];           /* binary sets with followChildren */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_config, 24);

/* pal_rt_syscalls[syscall nr]: struct pal_rt_syscall_hooks (lib/runtime_maps.h). */

/* ---- events ------------------------------------------------------------- */

#define PAL_RT_EV_EXEC 1
#define PAL_RT_EV_FORK 2
#define PAL_RT_EV_EXIT 3
#define PAL_RT_EV_HOOK 4

/* Common header of every runtime event. */
struct pal_rt_hdr {
	__u8 type;          /* PAL_RT_EV_* */
	__u8 pad[3];
	__u32 size;         /* bytes of the whole event */
	__u64 ktime;        /* when it happened (ns since boot) */
	__u32 pid;          /* tgid */
	__u32 tid;
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_hdr, 24);

struct pal_rt_exec_event {
	struct pal_rt_hdr hdr;
	struct pal_proc proc;           /* the new image (ktime = hdr.ktime) */
	__u16 filename_len;             /* bytes in filename, without NUL */
	__u16 args_len;                 /* bytes in args (NUL-separated) */
	__u32 pad;
	char filename[PAL_RT_PATH_MAX];
	char args[PAL_RT_ARGS_MAX];
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_exec_event, 24 + 104 + 8 + 256 + 768);

struct pal_rt_fork_event {
	struct pal_rt_hdr hdr;
	struct pal_proc proc;           /* the child (ktime = fork time) */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_fork_event, 128);

struct pal_rt_exit_event {
	struct pal_rt_hdr hdr;
	__u64 proc_ktime;               /* pal_proc.ktime of the exiting process */
	__u32 exit_code;                /* wait status: (status << 8) | signal */
	__u32 pad;
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_exit_event, 40);

struct pal_rt_hook_event {
	struct pal_rt_hdr hdr;
	__u64 proc_ktime;               /* 0 when the process is not tracked */
	__u32 hook_id;
	__u16 sel;                      /* matching selector */
	__u8 action;                    /* PAL_ACT_* reported */
	__u8 flags;                     /* PAL_HOOKEV_* */
	__s64 ret;                      /* return value (when known) */
	__u64 vals[PAL_RT_MAX_ARGS];    /* integer args; for strings and socket tuples: offset << 16 | length in str */
	char str[PAL_RT_STR_AREA];      /* string args, packed */
};
PAL_ABI_ASSERT_SIZE(struct pal_rt_hook_event, 24 + 24 + 48 + 1024);

/* pal_rt_hook_event.flags */
#define PAL_HOOKEV_ENFORCED 0x1     /* the action was carried out (not monitor mode) */
#define PAL_HOOKEV_TRUNCATED 0x2    /* a string argument was truncated */
#define PAL_HOOKEV_ACTION_FAILED 0x4 /* sending the signal failed */

/* Indexes of pal_rt_counters (per-CPU u64). */
#define PAL_RT_CNT_RINGBUF_FULL 0   /* events lost because the ring buffer was full */
#define PAL_RT_CNT_PROC_MISSING 1   /* hook fired for a process without entry */
#define PAL_RT_CNT_HOOK_RUNS 2      /* selector evaluations */
#define PAL_RT_CNT_SIGNAL_FAILED 3  /* bpf_send_signal failed */
#define PAL_RT_CNT_RATE_LIMITED 4   /* events suppressed by rateLimit */
#define PAL_RT_CNT_HEAD_SKIPS 5     /* hook runs the head prefilter spared */
#define PAL_RT_CNT_ID_SKIPS 6       /* hook runs the syscall-id prefilter spared */
#define PAL_RT_CNT_MAX 8

#endif
