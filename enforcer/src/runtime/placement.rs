//! Where a `raw_syscalls` tracepoint hook runs when its selectors name its
//! syscalls (tracing-policies' `syscall_route`): from those syscalls' own
//! tracepoints when every one of them has one, else still on
//! `raw_syscalls` but behind an in-kernel id prefilter, so that the
//! syscalls no selector admits cost one comparison instead of an
//! evaluation. Other hooks run where they are attached.

use std::collections::BTreeSet;

use palisade_tracing_policies::compile::CompiledHook;
use palisade_tracing_policies::syscall_route::{
    syscall_route, Phase, SyscallRoute, PREFILTER_IDS, PREFILTER_WORDS,
};

use super::syscalls;

// The pure crate's bitmap covers the kernel's (`PAL_SYSCALL_IDS`).
const _: () = assert!(PREFILTER_IDS == palisade_bpf::abi::runtime::MAX_SYSCALLS);

/// Where a hook's program runs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Placement {
    /// At the hook's own attachment.
    Own,
    /// At the per-syscall tracepoints of the route's syscalls.
    Routed(SyscallRoute),
    /// At the hook's own `raw_syscalls` tracepoint, behind an id
    /// prefilter.
    IdPrefilter {
        /// The ids it admits.
        ids: BTreeSet<u32>,
        /// The same as the program's bitmap (`PAL_SYSCALL_IDS`).
        bitmap: [u64; PREFILTER_WORDS],
    },
}

/// How a `raw_syscalls` hook avoids running for every syscall, for
/// `tracingpolicy list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallIds {
    /// It runs from the own tracepoints of these syscalls.
    Routed(Vec<u32>),
    /// It runs on `raw_syscalls` behind an id prefilter admitting these.
    Prefiltered(Vec<u32>),
}

impl SyscallIds {
    /// The syscalls, by name where the table knows it (`kexec_load`),
    /// else by number.
    pub fn names(&self) -> String {
        let (Self::Routed(ids) | Self::Prefiltered(ids)) = self;
        ids.iter()
            .map(|&nr| syscalls::name(nr).map_or_else(|| nr.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Placement {
    /// The placement of `hook`; `has_tracepoint(phase, nr)` says whether
    /// syscall nr has its own tracepoint for `phase`.
    pub(super) fn of(hook: &CompiledHook, has_tracepoint: impl Fn(Phase, u32) -> bool) -> Self {
        let Some(route) = syscall_route(hook) else {
            return Self::Own;
        };
        if route.ids.iter().all(|&nr| has_tracepoint(route.phase, nr)) {
            return Self::Routed(route);
        }
        match route.id_bitmap() {
            Some(bitmap) => Self::IdPrefilter {
                ids: route.ids,
                bitmap,
            },
            None => Self::Own,
        }
    }

    /// The hook to load: a routed hook reads the id from the per-syscall
    /// context; the others are `original`.
    pub(super) fn hook<'a>(&'a self, original: &'a CompiledHook) -> &'a CompiledHook {
        match self {
            Self::Routed(route) => &route.hook,
            Self::Own | Self::IdPrefilter { .. } => original,
        }
    }

    /// What `tracingpolicy list` says of it.
    pub(super) fn syscall_ids(&self) -> Option<SyscallIds> {
        match self {
            Self::Own => None,
            Self::Routed(route) => Some(SyscallIds::Routed(route.ids.iter().copied().collect())),
            Self::IdPrefilter { ids, .. } => {
                Some(SyscallIds::Prefiltered(ids.iter().copied().collect()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_tracing_policies::test_host::{first_hook, raw_syscalls_spec};

    /// The one hook of a policy with a tracepoint on `raw_syscalls/<event>`
    /// whose one selector requires the id to be one of `ids`.
    fn hook(event: &str, ids: &str) -> CompiledHook {
        let selectors = format!(
            "    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values: [{ids}]\n"
        );
        first_hook(&raw_syscalls_spec(event, &selectors))
    }

    #[test]
    fn ids_that_all_have_tracepoints_are_routed() {
        let h = hook("sys_enter", "\"246\", \"320\"");
        let p = Placement::of(&h, |_, _| true);
        let Placement::Routed(route) = &p else {
            panic!("expected a route, got {p:?}");
        };
        assert_eq!(route.ids, BTreeSet::from([246, 320]));
        assert!(std::ptr::eq(p.hook(&h), &route.hook));
        assert_eq!(p.syscall_ids(), Some(SyscallIds::Routed(vec![246, 320])));
    }

    #[test]
    fn an_id_without_a_tracepoint_keeps_the_hook_behind_a_prefilter() {
        let h = hook("sys_exit", "\"183\", \"59\"");
        let p = Placement::of(&h, |phase, nr| phase == Phase::Exit && nr != 183);
        let Placement::IdPrefilter { ids, bitmap } = &p else {
            panic!("expected a prefilter, got {p:?}");
        };
        assert_eq!(ids, &BTreeSet::from([59, 183]));
        assert_eq!(bitmap[0], 1 << 59);
        assert_eq!(bitmap[2], 1 << (183 - 128));
        assert!(std::ptr::eq(p.hook(&h), &h));
        let report = p.syscall_ids().expect("reported");
        assert_eq!(report, SyscallIds::Prefiltered(vec![59, 183]));
        assert_eq!(report.names(), "execve, afs_syscall");
    }

    #[test]
    fn ids_beyond_the_bitmap_and_open_hooks_run_where_attached() {
        assert_eq!(
            Placement::of(&hook("sys_enter", "\"600\""), |_, _| false),
            Placement::Own
        );
        let open = hook("sys_enter", "\"59\"");
        let mut unfiltered = open.clone();
        unfiltered.selectors.clear();
        assert_eq!(Placement::of(&unfiltered, |_, _| false), Placement::Own);
        assert_eq!(Placement::Own.syscall_ids(), None);
        assert_eq!(
            SyscallIds::Prefiltered(vec![59, 600]).names(),
            "execve, 600"
        );
    }
}
