// SPDX-License-Identifier: GPL-2.0
/*
 * Empty programs for the benchmarks: what the kernel charges for running
 * any program at a hook, before the program does anything. The runtime
 * benchmark attaches them (with no agent running) to show the floor under
 * palisade's hooks.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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

char LICENSE[] SEC("license") = "GPL";
