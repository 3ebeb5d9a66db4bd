/*
 * Reading the current task: credentials, namespaces, capabilities, and the
 * path of a file (a bounded dentry walk that crosses mounts, for program
 * types that cannot call bpf_d_path).
 */
#ifndef PALISADE_LIB_TASK_H
#define PALISADE_LIB_TASK_H

#include "vmlinux_min.h"
#include <bpf/bpf_core_read.h>

#include "runtime_maps.h"

#define PAL_PATH_DEPTH 48
#define PAL_PATH_BUF (PAL_RT_PATH_MAX * 2)

static __always_inline struct task_struct *pal_current(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

/* The upid of task in its own (innermost) pid namespace, or NULL. */
static __always_inline struct upid *pal_task_upid(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);

	if (!pid)
		return NULL;
	return &pid->numbers[BPF_CORE_READ(pid, level) & 31];
}

/* The pid of task in its own pid namespace. */
static __always_inline __u32 pal_task_nspid(struct task_struct *task)
{
	struct upid *up = pal_task_upid(task);
	int nr = 0;

	if (up)
		bpf_core_read(&nr, sizeof(nr), &up->nr);
	return nr;
}

/* Inode number of namespace `which` (PAL_NS_*) of task; 0 if unknown. */
static __always_inline __u64 pal_task_ns(struct task_struct *task, __u32 which)
{
	struct nsproxy *ns = BPF_CORE_READ(task, nsproxy);

	if (which == PAL_NS_USER)
		return BPF_CORE_READ(task, cred, user_ns, ns.inum);
	if (which == PAL_NS_PID) {
		struct upid *up = pal_task_upid(task);
		struct pid_namespace *pns = NULL;

		if (up)
			bpf_core_read(&pns, sizeof(pns), &up->ns);
		return pns ? BPF_CORE_READ(pns, ns.inum) : 0;
	}
	if (!ns)
		return 0;
	switch (which) {
	case PAL_NS_UTS:
		return BPF_CORE_READ(ns, uts_ns, ns.inum);
	case PAL_NS_IPC:
		return BPF_CORE_READ(ns, ipc_ns, ns.inum);
	case PAL_NS_MNT:
		return BPF_CORE_READ(ns, mnt_ns, ns.inum);
	case PAL_NS_PID_FOR_CHILDREN:
		return BPF_CORE_READ(ns, pid_ns_for_children, ns.inum);
	case PAL_NS_NET:
		return BPF_CORE_READ(ns, net_ns, ns.inum);
	case PAL_NS_TIME:
		return BPF_CORE_READ(ns, time_ns, ns.inum);
	case PAL_NS_TIME_FOR_CHILDREN:
		return BPF_CORE_READ(ns, time_ns_for_children, ns.inum);
	case PAL_NS_CGROUP:
		return BPF_CORE_READ(ns, cgroup_ns, ns.inum);
	}
	return 0;
}

/* Capability set `which` (PAL_CAPS_*) of task. */
static __always_inline __u64 pal_task_caps(struct task_struct *task, __u32 which)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);
	__u64 caps = 0;

	if (!cred)
		return 0;
	if (which == PAL_CAPS_INHERITABLE)
		bpf_core_read(&caps, sizeof(caps), &cred->cap_inheritable);
	else if (which == PAL_CAPS_PERMITTED)
		bpf_core_read(&caps, sizeof(caps), &cred->cap_permitted);
	else
		bpf_core_read(&caps, sizeof(caps), &cred->cap_effective);
	return caps;
}

struct pal_walk {
	struct dentry *dentry;
	struct dentry *mnt_root;
	struct mount *mnt;
	__u32 pos;      /* start of the assembled path in scratch->path */
	__u32 truncated;
};

static __always_inline struct mount *pal_real_mount(struct vfsmount *vfs)
{
	return (struct mount *)((void *)vfs - bpf_core_field_offset(struct mount, mnt));
}

static long pal_walk_step(__u32 i, struct pal_walk *w)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct dentry *d = w->dentry;
	struct dentry *parent;
	const unsigned char *name;
	__u32 len;

	if (!s || !d)
		return 1;
	parent = BPF_CORE_READ(d, d_parent);
	if (d == w->mnt_root || d == parent) {
		struct mount *m = w->mnt;
		struct mount *up = BPF_CORE_READ(m, mnt_parent);

		if (!up || up == m)
			return 1;   /* the root of the mount tree */
		w->dentry = BPF_CORE_READ(m, mnt_mountpoint);
		w->mnt = up;
		w->mnt_root = BPF_CORE_READ(up, mnt.mnt_root);
		return 0;
	}
	len = BPF_CORE_READ(d, d_name.len);
	name = BPF_CORE_READ(d, d_name.name);
	if (len > 255 || w->pos < len + 1) {
		w->truncated = 1;
		return 1;
	}
	w->pos -= len;
	bpf_probe_read_kernel(&s->path[w->pos & (PAL_PATH_BUF - 1)], len & 255, name);
	w->pos -= 1;
	s->path[w->pos & (PAL_PATH_BUF - 1)] = '/';
	w->dentry = parent;
	return 0;
}

/*
 * Assembles the absolute path of (mnt, dentry) at the end of
 * scratch->path; returns its start offset, the path ends with NUL at
 * PAL_PATH_BUF - 1.
 */
static __always_inline __u32 pal_path_walk(struct vfsmount *vfs, struct dentry *dentry,
					   __u32 *truncated)
{
	struct pal_rt_scratch *s = pal_rt_scratch();
	struct pal_walk w = {
		.dentry = dentry,
		.mnt_root = BPF_CORE_READ(vfs, mnt_root),
		.mnt = pal_real_mount(vfs),
		.pos = PAL_PATH_BUF - 1,
	};

	if (!s)
		return PAL_PATH_BUF - 1;
	s->path[PAL_PATH_BUF - 1] = 0;
	bpf_loop(PAL_PATH_DEPTH, pal_walk_step, &w, 0);
	if (w.pos == PAL_PATH_BUF - 1) {
		w.pos -= 1;
		s->path[(PAL_PATH_BUF - 2)] = '/';
	}
	*truncated = w.truncated;
	return w.pos;
}

/*
 * Copies the path of file into dst (at most PAL_RT_STR_MAX bytes with the
 * NUL); returns the length without NUL, or -1.
 */
static __always_inline int pal_file_path(struct file *file, char *dst, __u32 *truncated)
{
	struct pal_rt_scratch *s;
	struct vfsmount *vfs;
	struct dentry *dentry;
	__u32 pos;
	long n;

	if (!file)
		return -1;
	vfs = BPF_CORE_READ(file, f_path.mnt);
	dentry = BPF_CORE_READ(file, f_path.dentry);
	pos = pal_path_walk(vfs, dentry, truncated);
	s = pal_rt_scratch();
	if (!s)
		return -1;
	n = bpf_probe_read_kernel_str(dst, PAL_RT_STR_MAX, &s->path[pos & (PAL_PATH_BUF - 1)]);
	if (n <= 0)
		return -1;
	if ((PAL_PATH_BUF - 1) - pos >= PAL_RT_STR_MAX)
		*truncated = 1;
	return n - 1;
}

#endif
