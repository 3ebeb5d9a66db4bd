// SPDX-License-Identifier: GPL-2.0
/*
 * Runtime enforcement: process tracking (sched_process_exec/fork/exit) and
 * the generic hook programs that evaluate TracingPolicy selectors.
 *
 * The hook programs are loaded once per hook with PAL_HOOK_ID set (a
 * load-time constant; pal_tp_syscall_ids also with PAL_SYSCALL_IDS),
 * except the syscall programs (pal_sys_enter, pal_sys_tp, pal_sys_fentry),
 * which find the hooks of their syscall in pal_rt_syscalls.
 */
#include "lib/process.h"
#include "lib/selectors.h"

/* Hook id of this program instance (tracepoint, kprobe, LSM, fentry). */
volatile const __u32 PAL_HOOK_ID = 0;

/* pal_tp_syscall_ids: the syscall ids its hook can match, bit id % 64 of
 * word id / 64. */
volatile const __u64 PAL_SYSCALL_IDS[PAL_RT_MAX_SYSCALLS / 64] = {};

SEC("raw_tracepoint/sched_process_exec")
int pal_exec(struct bpf_raw_tracepoint_args *ctx)
{
	return pal_on_exec((struct linux_binprm *)ctx->args[2]);
}

SEC("raw_tracepoint/sched_process_fork")
int pal_fork(struct bpf_raw_tracepoint_args *ctx)
{
	return pal_on_fork((struct task_struct *)ctx->args[0], (struct task_struct *)ctx->args[1]);
}

SEC("raw_tracepoint/sched_process_exit")
int pal_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return pal_on_exit((struct task_struct *)ctx->args[0]);
}

struct pal_sys_ctx {
	struct pal_argctx args;
	__u32 nr;
	__u32 skip;         /* bit i: hooks[i] cannot match this call */
};

static long pal_sys_hook_step(__u32 index, struct pal_sys_ctx *c)
{
	struct pal_rt_syscall_hooks *hooks = bpf_map_lookup_elem(&pal_rt_syscalls, &c->nr);
	__u64 i = index;

	pal_barrier_var(i);
	if (!hooks || i >= PAL_RT_SYSCALL_SLOTS || i >= hooks->n)
		return 1;
	if (!((c->skip >> i) & 1))
		pal_hook_run(hooks->hooks[i], &c->args, 0);
	return 0;
}

/* The hooks of syscall nr, when program `via` is the one that runs them. */
static __always_inline struct pal_rt_syscall_hooks *pal_sys_hooks(__u32 nr, __u32 via)
{
	struct pal_rt_syscall_hooks *hooks;

	if (nr >= PAL_RT_MAX_SYSCALLS)
		return NULL;
	hooks = bpf_map_lookup_elem(&pal_rt_syscalls, &nr);
	if (!hooks || hooks->n == 0 || hooks->via != via)
		return NULL;
	return hooks;
}

/*
 * The hooks of this call that cannot match: those of the head prefilter
 * when the first PAL_RT_HEAD_BYTES bytes of the string at user address
 * str (the call's argument head_reg) begin no head. A string that cannot
 * be read runs every hook (they decide): a string shorter than 8 bytes
 * that ends right before unmapped memory.
 */
static __always_inline __u32 pal_sys_head_skip(const struct pal_rt_syscall_hooks *hooks,
					       __u64 str)
{
	__u64 word = 0, zeros;

	/* One word, not a string read (which costs twice as much). */
	if (bpf_probe_read_user(&word, sizeof(word), (const void *)str) < 0)
		return 0;
	/* From the string's end (its first NUL byte) on, the word is 0, as
	 * in the heads: the lowest 0x80 of zeros marks the first NUL byte
	 * (the borrow only sets bits above it). */
	zeros = (word - 0x0101010101010101ULL) & ~word & 0x8080808080808080ULL;
	if (zeros)
		word &= ((zeros & -zeros) >> 7) - 1;
#pragma unroll
	for (__u32 i = 0; i < PAL_RT_MAX_HEADS; i++) {
		if (i >= hooks->head_n)
			break;
		if ((word & hooks->heads[i].mask) == hooks->heads[i].value)
			return 0;
	}
	return hooks->head_skip;
}

/*
 * Whether every hook of this call is spared by the head prefilter
 * (counted), str being the user address of the call's argument
 * head_reg; c->skip is left with the hooks spared. Call it only when the
 * entry has a prefilter (head_skip).
 */
static __always_inline int pal_sys_spared(struct pal_sys_ctx *c,
					  const struct pal_rt_syscall_hooks *hooks, __u64 str)
{
	__u32 all = (1U << (hooks->n & 31)) - 1;

	c->skip = pal_sys_head_skip(hooks, str) & all;
	if (c->skip == all) {
		pal_rt_count_add(PAL_RT_CNT_HEAD_SKIPS, hooks->n);
		return 1;
	}
	if (c->skip)
		pal_rt_count_add(PAL_RT_CNT_HEAD_SKIPS, __builtin_popcount(c->skip));
	return 0;
}

/* Argument reg of a call whose arguments are in a (0 past them). */
static __always_inline __u64 pal_sys_arg(const struct pal_argctx *a, __u32 reg)
{
	return reg < PAL_RT_MAX_ARGS ? a->raw[reg] : 0;
}

/* Runs the hooks of syscall c->nr not in c->skip (its arguments are in c->args). */
static __always_inline void pal_sys_run(struct pal_sys_ctx *c,
					const struct pal_rt_syscall_hooks *hooks)
{
	if (hooks->n == 1)
		pal_hook_run(hooks->hooks[0], &c->args, 0);
	else
		bpf_loop(hooks->n, pal_sys_hook_step, c, 0);
}

/*
 * raw_syscalls:sys_enter: the hooks of syscalls that have no tracepoint
 * of their own (PAL_SYSCALL_VIA_RAW). Attached only while such a hook
 * exists: it runs for every syscall of the machine.
 */
SEC("raw_tracepoint/sys_enter")
int pal_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pal_sys_ctx c = { .nr = (__u32)ctx->args[1] };
	struct pal_rt_syscall_hooks *hooks = pal_sys_hooks(c.nr, PAL_SYSCALL_VIA_RAW);

	if (!hooks)
		return 0;
	pal_args_from_syscall(&c.args, ctx);
	if (hooks->head_skip && pal_sys_spared(&c, hooks, pal_sys_arg(&c.args, hooks->head_reg)))
		return 0;
	pal_sys_run(&c, hooks);
	return 0;
}

/* pal_sys_tp: the number of arguments of the syscalls it is attached to. */
volatile const __u32 PAL_SYSCALL_NARGS = 0;

/*
 * syscalls:sys_enter_<name>: the hooks of that syscall
 * (PAL_SYSCALL_VIA_TP). The kernel runs it only for its syscall, so other
 * syscalls pay no program run. Its context is the kernel's
 * struct syscall_tp_t: the pt_regs pointer, the syscall number (8 bytes
 * at 8) and the arguments (at 16). The attach checks reads against the
 * syscall's own record, which ends after its last argument: one load per
 * argument count (PAL_SYSCALL_NARGS, a load-time constant, so the reads
 * past it are dead code the verifier never counts), the arguments read
 * straight from the record.
 */
SEC("tracepoint")
int pal_sys_tp(void *ctx)
{
	struct pal_sys_ctx c;
	struct pal_rt_syscall_hooks *hooks;

	c.nr = *(__u32 *)(ctx + 8);
	hooks = pal_sys_hooks(c.nr, PAL_SYSCALL_VIA_TP);
	if (!hooks)
		return 0;
	__builtin_memset(&c.args, 0, sizeof(c.args));
#pragma unroll
	for (__u32 i = 0; i < PAL_RT_MAX_ARGS; i++)
		if (i < PAL_SYSCALL_NARGS)
			c.args.raw[i] = *(__u64 *)(ctx + 16 + 8 * i);
	c.skip = 0;
	if (hooks->head_skip && pal_sys_spared(&c, hooks, pal_sys_arg(&c.args, hooks->head_reg)))
		return 0;
	pal_sys_run(&c, hooks);
	return 0;
}

/* Syscall argument reg of a call seen by fentry (the caller's registers;
 * the fourth in r10, as the syscall instruction passes it). */
static __always_inline __u64 pal_sys_fentry_arg(const struct pt_regs *regs, __u32 reg)
{
	switch (reg) {
	case 0: return regs->di;
	case 1: return regs->si;
	case 2: return regs->dx;
	case 3: return regs->r10;
	case 4: return regs->r8;
	default: return regs->r9;
	}
}

/*
 * fentry on __x64_sys_<name>: the hooks of that syscall
 * (PAL_SYSCALL_VIA_FENTRY), where the kernel has BPF trampolines; one load
 * per hooked syscall. Unlike a syscall tracepoint it does not put every
 * task on the syscall-tracing slow path, and the kernel builds no record.
 * The wrapper's one argument is the caller's saved registers, a BTF
 * pointer here: the arguments and the syscall number (orig_ax) are plain
 * loads, no helper, and a call the head prefilter spares reads only its
 * string argument. 32-bit callers enter through __ia32_sys_<name> and are
 * not seen, as with the syscall tracepoints (which skip compat syscalls);
 * x32 numbers carry __X32_SYSCALL_BIT and fall outside the table.
 */
SEC("fentry")
int pal_sys_fentry(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	struct pal_sys_ctx c;
	struct pal_rt_syscall_hooks *hooks;

	c.nr = (__u32)regs->orig_ax;
	hooks = pal_sys_hooks(c.nr, PAL_SYSCALL_VIA_FENTRY);
	if (!hooks)
		return 0;
	c.skip = 0;
	if (hooks->head_skip && pal_sys_spared(&c, hooks, pal_sys_fentry_arg(regs, hooks->head_reg)))
		return 0;
	__builtin_memset(&c.args, 0, sizeof(c.args));
	c.args.raw[0] = regs->di;
	c.args.raw[1] = regs->si;
	c.args.raw[2] = regs->dx;
	c.args.raw[3] = regs->r10;
	c.args.raw[4] = regs->r8;
	c.args.raw[5] = regs->r9;
	pal_sys_run(&c, hooks);
	return 0;
}

SEC("tracepoint")
int pal_tracepoint(void *ctx)
{
	struct pal_argctx a = { .base = (__u64)(unsigned long)ctx };

	pal_hook_run(PAL_HOOK_ID, &a, 0);
	return 0;
}

/*
 * A tracepoint hook on raw_syscalls:sys_enter or sys_exit whose every
 * selector requires the syscall id to be in PAL_SYSCALL_IDS, where some of
 * those syscalls have no tracepoint of their own to route it to (see
 * tracing-policies' syscall_route). It runs for every syscall of the
 * machine, so it looks at the id first: both records hold it as a long at
 * offset 8, inside every record this program can be attached to. A call
 * whose id no selector admits is not evaluated; the selectors still decide
 * the others.
 */
SEC("tracepoint")
int pal_tp_syscall_ids(void *ctx)
{
	struct pal_argctx a = { .base = (__u64)(unsigned long)ctx };
	__u64 id = *(__u64 *)(ctx + 8);

	if (id >= PAL_RT_MAX_SYSCALLS || !((PAL_SYSCALL_IDS[id / 64] >> (id % 64)) & 1)) {
		pal_rt_count(PAL_RT_CNT_ID_SKIPS);
		return 0;
	}
	pal_hook_run(PAL_HOOK_ID, &a, 0);
	return 0;
}

/*
 * The kernel refuses to attach a raw tracepoint program that reads more
 * context than the tracepoint has arguments (max_ctx_offset), so the six
 * slots are copied with a helper: slots past the tracepoint's arguments
 * hold stack bytes, and no declared argument points at them.
 */
SEC("raw_tracepoint")
int pal_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx)
{
	struct pal_argctx a = {};

	bpf_probe_read_kernel(a.raw, sizeof(a.raw), ctx->args);

	pal_hook_run(PAL_HOOK_ID, &a, 0);
	return 0;
}

SEC("kprobe")
int pal_kprobe(struct pt_regs *ctx)
{
	struct pal_argctx a = {};

	pal_args_from_kprobe(&a, ctx);
	pal_hook_run(PAL_HOOK_ID, &a, 0);
	return 0;
}

/*
 * The arguments of the function a trampoline program (LSM, fentry) runs
 * at. The context holds exactly as many as the function has, and the
 * verifier rejects reading ctx[i] past them (file_open has one): ask
 * bpf_get_func_arg (5.17), which fails for the missing ones, left 0.
 */
static __always_inline void pal_args_from_trampoline(struct pal_argctx *a, void *ctx)
{
#pragma unroll
	for (int i = 0; i < PAL_RT_MAX_ARGS; i++)
		bpf_get_func_arg(ctx, i, &a->raw[i]);
}

SEC("lsm")
int pal_lsm(void *ctx)
{
	struct pal_argctx a = {};
	__s64 ret;

	pal_args_from_trampoline(&a, ctx);
	/*
	 * An LSM program returns 0 or a negative errno, and 6.12 checks that
	 * the whole register is in [-4095, 0]; pal_hook_run is verified on its
	 * own, so its result is unknown here. Check the sign-extended value
	 * and return that register (the barrier keeps clang from returning
	 * the unextended one).
	 */
	ret = pal_hook_run(PAL_HOOK_ID, &a, 0);
	pal_barrier_var(ret);
	if (ret > 0 || ret < -4095)
		return 0;
	return ret;
}

SEC("fentry")
int pal_fentry(void *ctx)
{
	struct pal_argctx a = {};

	pal_args_from_trampoline(&a, ctx);
	pal_hook_run(PAL_HOOK_ID, &a, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
