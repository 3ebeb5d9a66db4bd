/*
 * Process tracking: every exec, fork (of a thread group) and exit updates
 * pal_procs and is reported to the agent, which keeps the full process
 * cache (arguments, ancestors, pods). The kernel side keeps what selectors
 * need: the image's ktime, the parent, and which binary sets the binary,
 * its parent's and its ancestors' binaries belong to.
 */
#ifndef PALISADE_LIB_PROCESS_H
#define PALISADE_LIB_PROCESS_H

#include "task.h"

struct pal_binsets_ctx {
	__u32 tgid;
	__u32 len;          /* path length without NUL */
	__u32 off;          /* path start in scratch->exec.filename */
	__u32 pad;
	__u64 match[2];
};

static long pal_rev_path_step(__u32 i, struct pal_binsets_ctx *c)
{
	struct pal_rt_scratch *s = pal_rt_scratch();

	__u32 src;

	if (!s || i >= c->len || i >= PAL_RT_STR_KEY)
		return 1;
	src = c->len - 1 - i;
	pal_barrier_var(i);
	pal_barrier_var(src);
	s->rev[i & (PAL_RT_STR_MAX - 1)] = s->exec.filename[src & (PAL_RT_PATH_MAX - 1)];
	return 0;
}

static long pal_binset_step(__u32 i, struct pal_binsets_ctx *c)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_binset *b = bpf_map_lookup_elem(&pal_rt_binsets, &i);
	__u32 len = c->len;

	if (!s || !b || len >= PAL_RT_STR_MAX)
		return 1;
	s->skey.set_id = b->set_id;
	if (b->kind == PAL_BINSET_POSTFIX) {
		len = len < PAL_RT_STR_KEY ? len : PAL_RT_STR_KEY;
		s->skey.prefixlen = 32 + 8 * len;
		bpf_probe_read_kernel(s->skey.data, len & (PAL_RT_STR_MAX - 1), s->rev);
	} else {
		/* With the NUL: exact entries carry theirs, prefix entries do not. */
		len = len + 1 < PAL_RT_STR_KEY ? len + 1 : PAL_RT_STR_KEY;
		s->skey.prefixlen = 32 + 8 * len;
		bpf_probe_read_kernel(s->skey.data, len & (PAL_RT_STR_MAX - 1), s->exec.filename);
	}
	if (bpf_map_lookup_elem(&pal_rt_str, &s->skey))
		c->match[(i >> 6) & 1] |= 1ULL << (i & 63);
	return 0;
}

/* Which binary sets the path in scratch->exec.filename (len bytes) is in. */
static __always_inline void pal_binsets_match(struct pal_rt_scratch *s, __u32 len, __u64 *out,
					      __u32 nbinsets)
{
	struct pal_binsets_ctx c = { .len = len };

	if (nbinsets > PAL_RT_MAX_BINSETS)
		nbinsets = PAL_RT_MAX_BINSETS;
	if (nbinsets == 0 || len >= PAL_RT_STR_MAX)
		return;
	bpf_loop(len, pal_rev_path_step, &c, 0);
	bpf_loop(nbinsets, pal_binset_step, &c, 0);
	out[0] = c.match[0];
	out[1] = c.match[1];
}

static __always_inline void pal_proc_creds(struct pal_proc *p, struct task_struct *task)
{
	p->uid = BPF_CORE_READ(task, cred, uid.val);
	p->auid = BPF_CORE_READ(task, loginuid.val);
	p->nspid = pal_task_nspid(task);
	p->net_ns = (__u32)pal_task_ns(task, PAL_NS_NET);
	p->cgroup_id = bpf_get_current_cgroup_id();
}

/* followChildren: a new process inherits its parent's followed sets, plus the
 * followChildren sets the parent's binary is in. */
static __always_inline void pal_inherit_follow(struct pal_proc *p, const struct pal_proc *parent,
					       const struct pal_rt_config *cfg)
{
	p->bin_follow[0] = parent->bin_follow[0];
	p->bin_follow[1] = parent->bin_follow[1];
	if (cfg) {
		p->bin_follow[0] |= parent->bin_match[0] & cfg->follow_mask[0];
		p->bin_follow[1] |= parent->bin_match[1] & cfg->follow_mask[1];
	}
}

/* sched_process_exec: the current task runs a new image. */
static __always_inline int pal_on_exec(struct linux_binprm *bprm)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct task_struct *task = pal_current();
	struct pal_rt_config *cfg;
	struct pal_proc *old, *parent;
	struct pal_rt_exec_event *ev;
	__u32 zero = 0, tgid, ppid, trunc = 0;
	unsigned long arg_start, arg_end;
	int len;

	if (!s)
		return 0;
	ev = &s->exec;
	tgid = bpf_get_current_pid_tgid() >> 32;
	ppid = BPF_CORE_READ(task, real_parent, tgid);
	cfg = bpf_map_lookup_elem(&pal_rt_config, &zero);

	__builtin_memset(&ev->proc, 0, sizeof(ev->proc));
	ev->hdr.type = PAL_RT_EV_EXEC;
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->hdr.pid = tgid;
	ev->hdr.tid = (__u32)bpf_get_current_pid_tgid();
	ev->hdr.size = sizeof(*ev);
	ev->proc.ktime = ev->hdr.ktime;
	ev->proc.pid = tgid;
	ev->proc.ppid = ppid;
	ev->proc.flags = PAL_PROC_EXEC;
	pal_proc_creds(&ev->proc, task);

	old = bpf_map_lookup_elem(&pal_procs, &tgid);
	parent = bpf_map_lookup_elem(&pal_procs, &ppid);
	if (parent) {
		ev->proc.parent_ktime = parent->ktime;
		ev->proc.parent_bin[0] = parent->bin_match[0];
		ev->proc.parent_bin[1] = parent->bin_match[1];
	}
	if (old) {
		/* Same process, new image: the ancestry stays. */
		ev->proc.bin_follow[0] = old->bin_follow[0];
		ev->proc.bin_follow[1] = old->bin_follow[1];
	} else if (parent) {
		pal_inherit_follow(&ev->proc, parent, cfg);
	}

	len = pal_file_path(BPF_CORE_READ(bprm, file), ev->filename, &trunc);
	if (len < 0) {
		len = bpf_probe_read_kernel_str(ev->filename, PAL_RT_PATH_MAX,
						BPF_CORE_READ(bprm, filename));
		len = len > 0 ? len - 1 : 0;
	}
	ev->filename_len = len;
	if (cfg)
		pal_binsets_match(s, len, ev->proc.bin_match, cfg->nbinsets);

	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	ev->args_len = 0;
	if (arg_end > arg_start) {
		__u32 n = arg_end - arg_start;

		if (n > PAL_RT_ARGS_MAX)
			n = PAL_RT_ARGS_MAX;
		if (bpf_probe_read_user(ev->args, n & (PAL_RT_ARGS_MAX * 2 - 1),
					(void *)arg_start) == 0)
			ev->args_len = n;
	}

	bpf_map_update_elem(&pal_procs, &tgid, &ev->proc, BPF_ANY);
	if (bpf_ringbuf_output(&pal_rt_events, ev, sizeof(*ev), 0) < 0)
		pal_rt_count(PAL_RT_CNT_RINGBUF_FULL);
	return 0;
}

/* sched_process_fork: a new thread group (threads are not processes). */
static __always_inline int pal_on_fork(struct task_struct *parent_task, struct task_struct *child)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_fork_event *ev;
	struct pal_rt_config *cfg;
	struct pal_proc *parent;
	__u32 zero = 0, ptgid;

	if (!s || BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	ev = &s->fork;
	__builtin_memset(ev, 0, sizeof(*ev));
	ptgid = BPF_CORE_READ(parent_task, tgid);
	ev->hdr.type = PAL_RT_EV_FORK;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->hdr.pid = BPF_CORE_READ(child, tgid);
	ev->hdr.tid = ev->hdr.pid;
	ev->proc.ktime = ev->hdr.ktime;
	ev->proc.pid = ev->hdr.pid;
	ev->proc.ppid = ptgid;
	pal_proc_creds(&ev->proc, child);

	parent = bpf_map_lookup_elem(&pal_procs, &ptgid);
	cfg = bpf_map_lookup_elem(&pal_rt_config, &zero);
	if (parent) {
		ev->proc.parent_ktime = parent->ktime;
		ev->proc.bin_match[0] = parent->bin_match[0];
		ev->proc.bin_match[1] = parent->bin_match[1];
		ev->proc.parent_bin[0] = parent->bin_match[0];
		ev->proc.parent_bin[1] = parent->bin_match[1];
		pal_inherit_follow(&ev->proc, parent, cfg);
	}
	bpf_map_update_elem(&pal_procs, &ev->proc.pid, &ev->proc, BPF_ANY);
	if (bpf_ringbuf_output(&pal_rt_events, ev, sizeof(*ev), 0) < 0)
		pal_rt_count(PAL_RT_CNT_RINGBUF_FULL);
	return 0;
}

/* sched_process_exit: reported once, when the last thread of the group exits. */
static __always_inline int pal_on_exit(struct task_struct *task)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_rt_exit_event *ev;
	struct pal_proc *p;
	__u32 tgid;

	if (!s || BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	ev = &s->exit;
	__builtin_memset(ev, 0, sizeof(*ev));
	tgid = BPF_CORE_READ(task, tgid);
	ev->hdr.type = PAL_RT_EV_EXIT;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->hdr.pid = tgid;
	ev->hdr.tid = BPF_CORE_READ(task, pid);
	ev->exit_code = BPF_CORE_READ(task, exit_code);
	p = bpf_map_lookup_elem(&pal_procs, &tgid);
	if (p)
		ev->proc_ktime = p->ktime;
	bpf_map_delete_elem(&pal_procs, &tgid);
	if (bpf_ringbuf_output(&pal_rt_events, ev, sizeof(*ev), 0) < 0)
		pal_rt_count(PAL_RT_CNT_RINGBUF_FULL);
	return 0;
}

#endif
