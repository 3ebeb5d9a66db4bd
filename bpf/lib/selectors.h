/*
 * The in-kernel selector evaluator of runtime enforcement.
 *
 * A hook reads its declared arguments into the per-CPU event, then walks
 * its filters (pal_rt_filters[first_filter ..]) with bpf_loop: filters of
 * one selector are ANDed, selectors are tried in order and the first whose
 * filters all hold decides (Tetragon's semantics). Nothing here is
 * unrolled per policy: the number of selectors, filters and values is data.
 */
#ifndef PALISADE_LIB_SELECTORS_H
#define PALISADE_LIB_SELECTORS_H

#include "sock.h"
#include "task.h"

#define PAL_STR_LIMIT (PAL_RT_STR_AREA - PAL_RT_STR_MAX)
/* String-area bytes the rateLimit hash covers (those past the hook's
 * own strings count as zero, so that short strings hash alike). */
#define PAL_HASH_STR_BYTES 128


/*
 * The raw argument values of the current hook(s), taken from the context
 * (which cannot be handed to a bpf_loop callback), and what the hooks of
 * one syscall share: the last user string read, still in the event's
 * string area at ustr_off, so that the next hook reading the same
 * argument at the same place does not read it again.
 */
struct pal_argctx {
	__u64 base;                     /* address of the tracepoint record */
	__u64 raw[PAL_RT_MAX_ARGS];     /* function / syscall arguments */
	__u32 cur;                      /* bytes used in ev.str */
	__u32 hook_id;
	__u64 ustr_raw;                 /* user address of the last string written, 0: none */
	__u32 ustr_off;                 /* where it is in ev.str */
	__u32 ustr_n;                   /* its bytes with the NUL, | 1 << 31 if truncated */
};

/* x86-64 argument registers of a function call; a syscall passes its
 * fourth argument in r10 instead of cx. */
static __always_inline void pal_args_from_regs(struct pal_argctx *a, struct pt_regs *regs,
					       int syscall)
{
	a->raw[0] = BPF_CORE_READ(regs, di);
	a->raw[1] = BPF_CORE_READ(regs, si);
	a->raw[2] = BPF_CORE_READ(regs, dx);
	a->raw[3] = syscall ? BPF_CORE_READ(regs, r10) : BPF_CORE_READ(regs, cx);
	a->raw[4] = BPF_CORE_READ(regs, r8);
	a->raw[5] = BPF_CORE_READ(regs, r9);
}

static __always_inline void pal_args_from_syscall(struct pal_argctx *a,
						  struct bpf_raw_tracepoint_args *ctx)
{
	pal_args_from_regs(a, (struct pt_regs *)ctx->args[0], 1);
}

static __always_inline void pal_args_from_kprobe(struct pal_argctx *a, struct pt_regs *regs)
{
	pal_args_from_regs(a, regs, 0);
}

static __always_inline __u64 pal_sign_extend(__u64 v, __u32 size, int is_signed)
{
	switch (size) {
	case 1: return is_signed ? (__u64)(__s64)(__s8)v : (__u8)v;
	case 2: return is_signed ? (__u64)(__s64)(__s16)v : (__u16)v;
	case 4: return is_signed ? (__u64)(__s64)(__s32)v : (__u32)v;
	}
	return v;
}

/* Reads the tuple of socket argument i (described by d) into the
 * string area at off; vals[i] stays 0 when it cannot be read. */
static __noinline void pal_sock_arg(struct pal_rt_scratch *s, const struct pal_rt_argdesc *d,
				    __u64 raw, __u32 off, __u64 i)
{
	int err;

	if (!s || i >= PAL_RT_MAX_ARGS || off > PAL_STR_LIMIT)
		return;
	__builtin_memset(&s->sock, 0, sizeof(s->sock));
	if (d->kind == PAL_ARGKIND_SOCKADDR)
		err = pal_sock_from_addr(&s->sock, (const void *)raw,
					 d->source == PAL_ARGSRC_SYSCALL);
	else if (d->kind == PAL_ARGKIND_SOCK)
		err = pal_sock_from_sock(&s->sock, (struct sock *)raw);
	else
		err = pal_sock_from_skb(&s->sock, (struct sk_buff *)raw);
	s->ev.vals[i] = 0;
	if (err < 0)
		return;
	/* A helper copy: off is not aligned. */
	bpf_probe_read_kernel(&s->ev.str[off & (PAL_RT_STR_AREA - 1)], sizeof(s->sock), &s->sock);
	s->ev.vals[i] = ((__u64)off << 16) | sizeof(struct pal_rt_sock);
}

/*
 * Reads argument index of the hook into the event; 1 stops the loop.
 *
 * A global function, so that the verifier checks it once, on its own. As
 * the body of the bpf_loop callback it was checked in the caller's
 * context for every state the loop carried: 215k instructions per hook
 * program instead of 8k, 10-20 s per hook under qemu TCG.
 */
__noinline int pal_arg_read(__u32 index, struct pal_argctx *a)
{
	__u64 i = index;
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_hook_event *ev;
	struct pal_rt_argdesc *d;
	struct pal_rt_hook *hook;
	__u64 raw = 0;
	__u32 hook_id, off, trunc = 0;
	long n = 0;

	pal_barrier_var(i);
	if (!s || !a || i >= PAL_RT_MAX_ARGS)
		return 1;
	/* 6.1 takes map keys only from the stack, map values and packets. */
	hook_id = a->hook_id;
	hook = bpf_map_lookup_elem(&pal_rt_hooks, &hook_id);
	if (!hook)
		return 1;
	off = a->cur;
	ev = &s->ev;
	ev->vals[i] = 0;
	d = &hook->args[i];
	switch (d->source) {
	case PAL_ARGSRC_SYSCALL:
	case PAL_ARGSRC_REG:
		raw = a->raw[d->reg < PAL_RT_MAX_ARGS ? d->reg : 0];
		break;
	case PAL_ARGSRC_TP_FIELD:
		/* 8 bytes, then cut to the field's size (little endian). */
		bpf_probe_read_kernel(&raw, sizeof(raw), (void *)(a->base + d->offset));
		break;
	case PAL_ARGSRC_TP_DATALOC: {
		__u32 loc = 0;

		bpf_probe_read_kernel(&loc, sizeof(loc), (void *)(a->base + d->offset));
		raw = a->base + (loc & 0xffff);
		break;
	}
	default:
		return 0;
	}

	if (d->kind == PAL_ARGKIND_INT) {
		ev->vals[i] = pal_sign_extend(raw, d->size, d->flags & PAL_ARGF_SIGNED);
		return 0;
	}
	if (off > PAL_STR_LIMIT) {
		ev->vals[i] = 0;
		ev->flags |= PAL_HOOKEV_TRUNCATED;
		return 0;
	}
	if (d->kind == PAL_ARGKIND_USTR && raw && raw == a->ustr_raw && off == a->ustr_off) {
		/* The previous hook of this syscall left it right here. */
		n = a->ustr_n & 0xffff;
		if (a->ustr_n >> 31)
			ev->flags |= PAL_HOOKEV_TRUNCATED;
		ev->vals[i] = ((__u64)off << 16) | (__u64)((n - 1) & 0xffff);
		a->cur = off + (n & (PAL_RT_STR_MAX * 2 - 1));
		return 0;
	}
	/* Whatever is written now may cover the remembered string. */
	a->ustr_raw = 0;
	if (d->kind == PAL_ARGKIND_SOCKADDR || d->kind == PAL_ARGKIND_SOCK ||
	    d->kind == PAL_ARGKIND_SKB) {
		pal_sock_arg(s, d, raw, off, i);
		a->cur = off + (ev->vals[i] ? sizeof(struct pal_rt_sock) : 0);
		return 0;
	}
	switch (d->kind) {
	case PAL_ARGKIND_USTR:
		n = bpf_probe_read_user_str(&ev->str[off & (PAL_RT_STR_AREA - 1)], PAL_RT_STR_MAX,
					    (void *)raw);
		break;
	case PAL_ARGKIND_KSTR:
		n = bpf_probe_read_kernel_str(&ev->str[off & (PAL_RT_STR_AREA - 1)], PAL_RT_STR_MAX,
					      (void *)raw);
		break;
	case PAL_ARGKIND_FILE:
		n = 1 + pal_file_path((struct file *)raw, &ev->str[off & (PAL_RT_STR_AREA - 1)], &trunc);
		break;
	case PAL_ARGKIND_PATH: {
		struct path *p = (struct path *)raw;
		__u32 pos;

		if (!p)
			break;
		pos = pal_path_walk(BPF_CORE_READ(p, mnt), BPF_CORE_READ(p, dentry), &trunc);
		n = bpf_probe_read_kernel_str(&ev->str[off & (PAL_RT_STR_AREA - 1)], PAL_RT_STR_MAX,
					      &s->path[pos & (PAL_PATH_BUF - 1)]);
		break;
	}
	case PAL_ARGKIND_BPRM: {
		struct linux_binprm *bprm = (struct linux_binprm *)raw;

		if (bprm)
			n = 1 + pal_file_path(BPF_CORE_READ(bprm, file),
					      &ev->str[off & (PAL_RT_STR_AREA - 1)], &trunc);
		break;
	}
	}
	if (n <= 0) {
		ev->str[off & (PAL_RT_STR_AREA - 1)] = 0;
		n = 1;
	}
	if (n >= PAL_RT_STR_MAX)
		trunc = 1;
	if (trunc)
		ev->flags |= PAL_HOOKEV_TRUNCATED;
	ev->vals[i] = ((__u64)off << 16) | (__u64)((n - 1) & 0xffff);
	a->cur = off + (n & (PAL_RT_STR_MAX * 2 - 1));
	if (d->kind == PAL_ARGKIND_USTR) {
		a->ustr_raw = raw;
		a->ustr_off = off;
		a->ustr_n = (__u32)n | (trunc ? 1U << 31 : 0);
	}
	return 0;
}

struct pal_eval {
	__u32 first;        /* first filter of the hook */
	__u32 tgid;
	__u32 cur_sel;
	__u32 sel_ok;
	__u32 matched;
	__u32 result_sel;
};

struct pal_rev {
	__u32 len;
	__u32 off;
};

static long pal_rev_step(__u32 i, struct pal_rev *r)
{
	struct pal_rt_scratch *s = pal_rt_scratch();

	__u32 src;

	if (!s || i >= r->len || i >= PAL_RT_STR_KEY)
		return 1;
	src = r->off + r->len - 1 - i;
	pal_barrier_var(i);
	pal_barrier_var(src);
	s->skey.data[i & (PAL_RT_STR_MAX - 1)] = s->ev.str[src & (PAL_RT_STR_AREA - 1)];
	return 0;
}

/* Global functions (not static) are verified once, on their own: this
 * keeps the verifier's work linear in the number of filter kinds. */
__noinline int pal_num_in_set(__u32 set_id, __u64 v)
{
	struct pal_rt_scratch *s = pal_rt_scratch();

	if (!s)
		return 0;
	s->nkey.prefixlen = 32 + 64;
	s->nkey.set_id = set_id;
	__builtin_memset(s->nkey.data, 0, sizeof(s->nkey.data));
#pragma unroll
	for (int k = 0; k < 8; k++)
		s->nkey.data[k] = (v >> (56 - 8 * k)) & 0xff;
	return bpf_map_lookup_elem(&pal_rt_num, &s->nkey) != NULL;
}

struct pal_follow {
	__u32 pid;
	__u32 set_id;
	__u32 nspid;        /* compare namespace pids */
	__u32 found;
};

static long pal_follow_step(__u32 i, struct pal_follow *w)
{
	struct pal_proc *p = bpf_map_lookup_elem(&pal_procs, &w->pid);

	if (!p || p->ppid == 0 || p->ppid == w->pid)
		return 1;
	w->pid = p->ppid;
	p = bpf_map_lookup_elem(&pal_procs, &w->pid);
	if (!p)
		return 1;
	if (pal_num_in_set(w->set_id, w->nspid ? p->nspid : w->pid)) {
		w->found = 1;
		return 1;
	}
	return 0;
}

/* matchPIDs: tgid (or its namespace pid) in the set; followForks walks up. */
static __always_inline int pal_pid_filter(const struct pal_rt_filter *f, __u32 tgid)
{
	struct pal_follow w = {
		.pid = tgid,
		.set_id = f->set_id,
		.nspid = f->flags & PAL_FILTF_NSPID,
	};
	__u32 pid = tgid;

	if (w.nspid)
		pid = pal_task_nspid(pal_current());
	if (pal_num_in_set(f->set_id, pid))
		return 1;
	if (!(f->flags & PAL_FILTF_FOLLOW))
		return 0;
	bpf_loop(PAL_RT_FOLLOW_DEPTH, pal_follow_step, &w, 0);
	return w.found;
}

/* Address `which` (PAL_SOCK_SRC/DST) of the tested tuple in the IPv4 set
 * v4 or the IPv6 set v6. */
static __always_inline int pal_addr_in_set(struct pal_rt_scratch *s, __u32 which, __u32 v4,
					   __u32 v6)
{
	const __u8 *addr = which == PAL_SOCK_DST ? s->sock.daddr : s->sock.saddr;

	__builtin_memset(s->nkey.data, 0, sizeof(s->nkey.data));
	if (s->sock.family == PAL_AF_INET) {
		s->nkey.prefixlen = 32 + 32;
		s->nkey.set_id = v4;
		__builtin_memcpy(s->nkey.data, addr, 4);
	} else {
		s->nkey.prefixlen = 32 + 128;
		s->nkey.set_id = v6;
		__builtin_memcpy(s->nkey.data, addr, 16);
	}
	return bpf_map_lookup_elem(&pal_rt_num, &s->nkey) != NULL;
}

/*
 * A socket filter on the tuple of argument value v; applies the Not-form
 * (PAL_FILTF_INVERT) itself: a tuple that was not read, an address filter
 * on a non-IP family and a state filter without state fail both forms.
 */
__noinline int pal_sock_filter(__u32 idx, __u64 v)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_filter *f = bpf_map_lookup_elem(&pal_rt_filters, &idx);
	__u32 off = (v >> 16) & 0xffff, port;
	int ok = 0;

	if (!s || !f || (v & 0xffff) != sizeof(struct pal_rt_sock) || off > PAL_STR_LIMIT)
		return 0;
	bpf_probe_read_kernel(&s->sock, sizeof(s->sock), &s->ev.str[off & (PAL_RT_STR_AREA - 1)]);
	port = f->aux == PAL_SOCK_DST ? s->sock.dport : s->sock.sport;
	switch (f->kind) {
	case PAL_FILT_SOCK_PORT:
		ok = pal_num_in_set(f->set_id, port);
		break;
	case PAL_FILT_SOCK_PRIV:
		ok = port < 1024;
		break;
	case PAL_FILT_SOCK_ADDR:
		if (!(s->sock.flags & PAL_SOCKF_IP))
			return 0;
		ok = pal_addr_in_set(s, f->aux, f->set_id, (__u32)f->value);
		break;
	case PAL_FILT_SOCK_FIELD:
		if (f->aux == PAL_SOCK_FAMILY)
			ok = pal_num_in_set(f->set_id, s->sock.family);
		else if (f->aux == PAL_SOCK_PROTOCOL)
			ok = pal_num_in_set(f->set_id, s->sock.protocol);
		else if (s->sock.flags & PAL_SOCKF_STATE)
			ok = pal_num_in_set(f->set_id, s->sock.state);
		else
			return 0;
		break;
	default:
		return 0;
	}
	return (f->flags & PAL_FILTF_INVERT) ? !ok : ok;
}

static __always_inline int pal_bit(const __u64 *bits, __u32 i)
{
	return (bits[(i >> 6) & 1] >> (i & 63)) & 1;
}

/* Whether filter idx holds (before negation), -1 if it does not exist. */
__noinline int pal_filter_eval(__u32 idx, __u32 tgid)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_filter *f = bpf_map_lookup_elem(&pal_rt_filters, &idx);
	struct pal_rt_hook_event *ev;
	__u32 arg;
	__u64 v;

	if (!s || !f)
		return -1;
	ev = &s->ev;
	arg = f->arg < PAL_RT_MAX_ARGS ? f->arg : 0;
	v = ev->vals[arg];

	switch (f->kind) {
	case PAL_FILT_TRUE:
		return 1;
	case PAL_FILT_ARG_NUM:
		if (f->flags & PAL_FILTF_SIGNED)
			v ^= 1ULL << 63;
		return pal_num_in_set(f->set_id, v);
	case PAL_FILT_ARG_STR: {
		__u32 off = (v >> 16) & 0xffff, len = v & 0xffff;

		if (off > PAL_STR_LIMIT)
			return 0;
		/* Longer strings are compared by their first PAL_RT_STR_KEY bytes:
		 * no Equal value is that long, Prefix values are shorter. */
		len = len + 1 < PAL_RT_STR_KEY ? len + 1 : PAL_RT_STR_KEY;
		s->skey.set_id = f->set_id;
		s->skey.prefixlen = 32 + 8 * len;
		bpf_probe_read_kernel(s->skey.data, len & (PAL_RT_STR_MAX - 1),
				      &ev->str[off & (PAL_RT_STR_AREA - 1)]);
		return bpf_map_lookup_elem(&pal_rt_str, &s->skey) != NULL;
	}
	case PAL_FILT_ARG_STR_REV: {
		struct pal_rev r = { .len = v & 0xffff, .off = (v >> 16) & 0xffff };

		if (r.len >= PAL_RT_STR_MAX || r.off > PAL_STR_LIMIT)
			return 0;
		s->skey.set_id = f->set_id;
		s->skey.prefixlen = 32 + 8 * (r.len < PAL_RT_STR_KEY ? r.len : PAL_RT_STR_KEY);
		bpf_loop(r.len, pal_rev_step, &r, 0);
		return bpf_map_lookup_elem(&pal_rt_str, &s->skey) != NULL;
	}
	case PAL_FILT_ARG_GT:
		if (f->flags & PAL_FILTF_SIGNED)
			return (__s64)v > (__s64)f->value;
		return v > f->value;
	case PAL_FILT_ARG_LT:
		if (f->flags & PAL_FILTF_SIGNED)
			return (__s64)v < (__s64)f->value;
		return v < f->value;
	case PAL_FILT_ARG_MASK:
		return (v & f->value) != 0;
	case PAL_FILT_BINARY:
	case PAL_FILT_PARENT_BINARY: {
		struct pal_proc *p = bpf_map_lookup_elem(&pal_procs, &tgid);

		if (!p)
			return 0;
		if (f->kind == PAL_FILT_PARENT_BINARY)
			return pal_bit(p->parent_bin, f->aux);
		if (pal_bit(p->bin_match, f->aux))
			return 1;
		return (f->flags & PAL_FILTF_FOLLOW) && pal_bit(p->bin_follow, f->aux);
	}
	case PAL_FILT_PID:
		return pal_pid_filter(f, tgid);
	case PAL_FILT_NAMESPACE:
		return pal_num_in_set(f->set_id, pal_task_ns(pal_current(), f->aux));
	case PAL_FILT_CAPS:
		return (pal_task_caps(pal_current(), f->aux) & f->value) != 0;
	case PAL_FILT_SOCK_PORT:
	case PAL_FILT_SOCK_PRIV:
	case PAL_FILT_SOCK_ADDR:
	case PAL_FILT_SOCK_FIELD:
		return pal_sock_filter(idx, v);
	}
	return 0;
}

static long pal_filter_step(__u32 i, struct pal_eval *e)
{
	__u32 idx = e->first + i;
	struct pal_rt_filter *f = bpf_map_lookup_elem(&pal_rt_filters, &idx);
	int ok;

	if (!f)
		return 1;
	if (f->sel != e->cur_sel) {
		if (e->sel_ok) {
			e->matched = 1;
			e->result_sel = e->cur_sel;
			return 1;
		}
		e->cur_sel = f->sel;
		e->sel_ok = 1;
	}
	if (!e->sel_ok)
		return 0;
	ok = pal_filter_eval(idx, e->tgid);
	if (ok < 0)
		return 1;
	if (f->flags & PAL_FILTF_NEGATE)
		ok = !ok;
	if (!ok)
		e->sel_ok = 0;
	return 0;
}

/*
 * FNV-1a over the integer args and the first bytes of the strings. The
 * strings are read as words: str follows vals at an 8-byte aligned offset.
 * Without telling clang, it reads a char array byte by byte, and keeping
 * PAL_HASH_STR_BYTES (128) in flight takes 464 bytes of stack, which with the callers'
 * frames exceeds the 512 bytes that 6.1 and 6.12 allow for a call chain.
 */
static __always_inline __u64 pal_args_hash(struct pal_rt_hook_event *ev, __u32 cur)
{
	const __u64 *words = __builtin_assume_aligned(ev->str, 8);
	__u64 h = 14695981039346656037ULL;

	_Static_assert(__builtin_offsetof(struct pal_rt_hook_event, str) % 8 == 0,
		       "str is read as words");
#pragma unroll
	for (int i = 0; i < PAL_RT_MAX_ARGS; i++)
		h = (h ^ ev->vals[i]) * 1099511628211ULL;
	/* The cur bytes written by this hook: what follows is stale. */
#pragma unroll
	for (int i = 0; i < PAL_HASH_STR_BYTES / 8; i++) {
		__u64 w = words[i];

		if (8 * i >= cur)
			w = 0;
		else if (cur - 8 * i < 8)
			w &= (1ULL << (8 * (cur - 8 * i))) - 1;
		h = (h ^ w) * 1099511628211ULL;
	}
	return h;
}

/* Whether rateLimit allows posting now (and records it if so). */
static __noinline int pal_rate_allows(const struct pal_rt_sel *sel, struct pal_rt_hook_event *ev,
				      __u32 cur)
{
	struct pal_rt_rate_key key = {
		.hook_id = ev->hook_id,
		.sel = ev->sel,
	};
	__u64 now = ev->hdr.ktime;
	__u64 *last;

	if (!sel->rate_ns)
		return 1;
	if (sel->rate_scope == PAL_RATE_THREAD)
		key.scope_id = ev->hdr.tid;
	else if (sel->rate_scope == PAL_RATE_PROCESS)
		key.scope_id = ev->hdr.pid;
	key.args_hash = pal_args_hash(ev, cur);
	last = bpf_map_lookup_elem(&pal_rt_rate, &key);
	if (last && now - *last < sel->rate_ns)
		return 0;
	bpf_map_update_elem(&pal_rt_rate, &key, &now, BPF_ANY);
	return 1;
}

/*
 * Runs hook hook_id: reads its arguments, evaluates its selectors and
 * carries out the actions of the first match. Returns the override value
 * (negative errno) to apply, or 0.
 */
__noinline int pal_hook_run(__u32 hook_id, struct pal_argctx *a, __s64 ret)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_hook *hook = bpf_map_lookup_elem(&pal_rt_hooks, &hook_id);
	struct pal_rt_config *cfg;
	struct pal_rt_sel *sel;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pal_eval e = {};
	__u32 cur, size, sel_idx, zero = 0, nfilters, nargs;
	struct pal_proc *proc;
	int override = 0;

	if (!s || !a || !hook || !(hook->flags & PAL_HOOK_ACTIVE))
		return 0;
	pal_rt_count(PAL_RT_CNT_HOOK_RUNS);

	/* Only what the argument reads and the filters need: the rest of the
	 * event is filled in once a selector matched. */
	s->ev.flags = 0;
	a->cur = 0;
	a->hook_id = hook_id;
	nargs = hook->nargs;
	/* Slots past the hook's arguments are zeroed: the rateLimit hash
	 * covers all six. */
	for (int i = 0; i < PAL_RT_MAX_ARGS; i++) {
		if (i >= nargs || pal_arg_read(i, a))
			s->ev.vals[i] = 0;
	}
	cur = a->cur;

	e.first = hook->first_filter;
	e.tgid = pid_tgid >> 32;
	e.sel_ok = 1;
	nfilters = hook->nfilters;
	if (nfilters > PAL_RT_MAX_FILTERS_PER_HOOK)
		nfilters = PAL_RT_MAX_FILTERS_PER_HOOK;
	bpf_loop(nfilters, pal_filter_step, &e, 0);
	if (!e.matched) {
		if (!e.sel_ok || nfilters == 0)
			return 0;
		e.result_sel = e.cur_sel;
	}

	sel_idx = hook->first_sel + e.result_sel;
	sel = bpf_map_lookup_elem(&pal_rt_sels, &sel_idx);
	if (!sel)
		return 0;
	s->ev.hdr.type = PAL_RT_EV_HOOK;
	s->ev.hdr.ktime = bpf_ktime_get_boot_ns();
	s->ev.hdr.pid = pid_tgid >> 32;
	s->ev.hdr.tid = (__u32)pid_tgid;
	s->ev.hook_id = hook_id;
	s->ev.ret = ret;
	s->ev.sel = e.result_sel;
	s->ev.action = sel->action;

	cfg = bpf_map_lookup_elem(&pal_rt_config, &zero);
	if (!(hook->flags & PAL_HOOK_MONITOR)) {
		s->ev.flags |= PAL_HOOKEV_ENFORCED;
		if (sel->signal && !(cfg && cfg->self_tgid == e.tgid)) {
			if (bpf_send_signal(sel->signal) < 0) {
				s->ev.flags |= PAL_HOOKEV_ACTION_FAILED;
				pal_rt_count(PAL_RT_CNT_SIGNAL_FAILED);
			}
		}
		override = sel->override;
	}

	if (!sel->post)
		return override;
	if (cur > PAL_RT_STR_AREA)
		cur = PAL_RT_STR_AREA;
	if (!pal_rate_allows(sel, &s->ev, cur)) {
		pal_rt_count(PAL_RT_CNT_RATE_LIMITED);
		return override;
	}
	proc = bpf_map_lookup_elem(&pal_procs, &e.tgid);
	s->ev.proc_ktime = proc ? proc->ktime : 0;
	if (!proc)
		pal_rt_count(PAL_RT_CNT_PROC_MISSING);
	size = __builtin_offsetof(struct pal_rt_hook_event, str) + cur;
	s->ev.hdr.size = size;
	/* cur comes from pal_arg_read, unknown to the verifier: keep the mask. */
	pal_barrier_var(size);
	if (bpf_ringbuf_output(&pal_rt_events, &s->ev, size & 2047, 0) < 0)
		pal_rt_count(PAL_RT_CNT_RINGBUF_FULL);
	return override;
}

#endif
