// SPDX-License-Identifier: GPL-2.0
/*
 * Empty programs for the benchmarks: what the kernel charges for running
 * any program at a hook, before the program does anything. The runtime
 * benchmark attaches them (with no agent running) to show the floor under
 * palisade's hooks.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/vmlinux_min.h"

SEC("tracepoint")
int pal_floor_tp(void *ctx)
{
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int pal_floor_raw(void *ctx)
{
	return 0;
}

/* Loaded against a function (where the kernel has BPF trampolines). */
SEC("fentry")
int pal_floor_fentry(void *ctx)
{
	return 0;
}

/*
 * The least a program that filters on a path can do: read the first 8
 * bytes of openat's path (what palisade's head prefilter reads), on the
 * syscall's tracepoint (the path is the record's second argument, at 24)
 * and from fentry on its wrapper (in the caller's si).
 */
SEC("tracepoint")
int pal_floor_tp_path(void *ctx)
{
	__u64 word = 0;

	bpf_probe_read_user(&word, sizeof(word), (const void *)*(__u64 *)(ctx + 24));
	return 0;
}

SEC("fentry")
int pal_floor_fentry_path(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	__u64 word = 0;

	bpf_probe_read_user(&word, sizeof(word), (const void *)regs->si);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
