//! Which syscalls a hook on `raw_syscalls:sys_enter` / `sys_exit` can
//! match, so that it can run from those syscalls' own tracepoints instead.
//!
//! A program on `raw_syscalls:sys_enter` runs for every syscall of the
//! machine. When every selector of the hook requires the syscall id to be
//! in a small set (`matchArgs` Equal or InMap on the `id` field, as in
//! Tetragon's list examples), the hook can only match those syscalls, and
//! attaching it to `syscalls:sys_enter_<name>` for each of them gives the
//! same events at a fraction of the cost: the kernel runs it for nothing
//! else. The filters are still evaluated, so the routing never widens what
//! matches.
//!
//! When some of those syscalls have no tracepoint of their own, the hook
//! stays on `raw_syscalls` behind an id prefilter instead
//! ([`SyscallRoute::id_bitmap`]): its program looks at the id first and
//! evaluates nothing for a syscall no selector admits.

use std::collections::BTreeSet;

use crate::compile::{ArgRead, ArgSource, Attach, CompiledHook, FilterPlan};

/// Byte offset of the `id` field in the records of `raw_syscalls:sys_enter`
/// and `raw_syscalls:sys_exit`, and of the syscall number in the context
/// the kernel gives programs on `syscalls:sys_{enter,exit}_<name>`.
pub const ID_OFFSET: u16 = 8;

/// Most syscall ids a hook is routed to (one tracepoint attachment each).
pub const MAX_ROUTED: usize = 64;

/// Syscall ids an id prefilter covers (the kernel's `PAL_RT_MAX_SYSCALLS`).
pub const PREFILTER_IDS: u32 = 512;

/// Words of an id prefilter's bitmap.
pub const PREFILTER_WORDS: usize = PREFILTER_IDS as usize / 64;

/// Whether a routed hook runs at syscall entry or exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `sys_enter`.
    Enter,
    /// `sys_exit`.
    Exit,
}

impl Phase {
    /// The per-syscall tracepoint of syscall `name` (`sys_enter_openat`).
    pub fn tracepoint(self, name: &str) -> String {
        match self {
            Phase::Enter => format!("sys_enter_{name}"),
            Phase::Exit => format!("sys_exit_{name}"),
        }
    }
}

/// A hook that can run from per-syscall tracepoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SyscallRoute {
    /// Entry or exit.
    pub phase: Phase,
    /// The syscall ids it can match.
    pub ids: BTreeSet<u32>,
    /// The hook to load there: its `id` argument is read as the 4 bytes
    /// the per-syscall context holds (the kernel's `int syscall_nr`).
    pub hook: CompiledHook,
}

impl SyscallRoute {
    /// The bitmap of an id prefilter that admits exactly [`Self::ids`]
    /// (bit `id % 64` of word `id / 64`), for the hook left on
    /// `raw_syscalls` (the original hook, not [`Self::hook`]: there the id
    /// is the record's 8-byte field); `None` when an id is
    /// [`PREFILTER_IDS`] or more.
    pub fn id_bitmap(&self) -> Option<[u64; PREFILTER_WORDS]> {
        let mut words = [0u64; PREFILTER_WORDS];
        for &id in &self.ids {
            if id >= PREFILTER_IDS {
                return None;
            }
            words[id as usize / 64] |= 1 << (id % 64);
        }
        Some(words)
    }
}

/// The route of `hook`, if it is a `raw_syscalls` tracepoint hook whose
/// every selector requires the syscall id to be one of at most
/// [`MAX_ROUTED`] non-negative values.
pub fn syscall_route(hook: &CompiledHook) -> Option<SyscallRoute> {
    let Attach::Tracepoint { subsystem, event } = &hook.attach else {
        return None;
    };
    let phase = match (subsystem.as_str(), event.as_str()) {
        ("raw_syscalls", "sys_enter") => Phase::Enter,
        ("raw_syscalls", "sys_exit") => Phase::Exit,
        _ => return None,
    };
    let id_slot = hook.args.iter().position(|a| {
        a.source == ArgSource::TpField { offset: ID_OFFSET }
            && matches!(a.read, ArgRead::Int { size: 8, .. })
    })?;
    if hook.selectors.is_empty() {
        return None;
    }
    let mut ids = BTreeSet::new();
    for sel in &hook.selectors {
        // The ids this selector admits: the intersection of its id
        // filters (at least one).
        let mut admitted: Option<BTreeSet<u32>> = None;
        for f in &sel.filters {
            if let FilterPlan::ArgNum {
                arg,
                signed,
                negate: false,
                entries,
            } = f
            {
                if usize::from(*arg) != id_slot {
                    continue;
                }
                let set = expand(entries, *signed)?;
                admitted = Some(match admitted {
                    Some(a) => a.intersection(&set).copied().collect(),
                    None => set,
                });
            }
        }
        ids.extend(admitted?);
        if ids.len() > MAX_ROUTED {
            return None;
        }
    }
    let mut routed = hook.clone();
    routed.args[id_slot].read = ArgRead::Int {
        size: 4,
        signed: true,
    };
    Some(SyscallRoute {
        phase,
        ids,
        hook: routed,
    })
}

/// The values of LPM entries (64-bit keys, signed ones with the sign bit
/// flipped), if they are at most [`MAX_ROUTED`] syscall-sized numbers.
fn expand(entries: &[(u64, u32)], signed: bool) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for &(key, bits) in entries {
        let span = 64u32.checked_sub(bits)?;
        if span > 6 {
            return None;
        }
        let first = if signed { key ^ (1 << 63) } else { key };
        for v in first..=first.checked_add((1u64 << span) - 1)? {
            out.insert(u32::try_from(v).ok().filter(|&n| n < 1 << 16)?);
        }
        if out.len() > MAX_ROUTED {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::eval::{hooks, ResolvedLists};
    use crate::test_host::{first_hook, policy, raw_syscalls_spec};
    use crate::{ArgValue, CompiledSelectors, Context};

    /// A policy's one tracepoint hook on `raw_syscalls/<event>` with
    /// `selectors` (YAML, indented for `selectors:`), compiled.
    fn hook(event: &str, selectors: &str) -> CompiledHook {
        first_hook(&raw_syscalls_spec(event, selectors))
    }

    /// The route of [`hook`].
    fn route(event: &str, selectors: &str) -> Option<SyscallRoute> {
        syscall_route(&hook(event, selectors))
    }

    const KEXEC: &str = "    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: [\"246\", \"320\"]
    - matchArgs:
      - index: 0
        operator: InMap
        values: [\"101\"]
      matchActions:
      - action: Sigkill
";

    #[test]
    fn selectors_that_all_name_ids_route_to_their_union() {
        let r = route("sys_enter", KEXEC).expect("routed");
        assert_eq!(r.phase, Phase::Enter);
        assert_eq!(r.ids, BTreeSet::from([101, 246, 320]));
        assert_eq!(
            r.hook.args[0].read,
            ArgRead::Int {
                size: 4,
                signed: true
            }
        );
        assert_eq!(r.phase.tracepoint("kexec_load"), "sys_enter_kexec_load");
        let exit = route("sys_exit", KEXEC).expect("routed");
        assert_eq!(exit.phase, Phase::Exit);
    }

    #[test]
    fn a_selector_without_an_id_filter_keeps_the_raw_tracepoint() {
        let open = format!("{KEXEC}    - matchActions:\n      - action: Post\n");
        assert_eq!(route("sys_enter", &open), None);
        assert_eq!(route("sys_enter", ""), None);
    }

    #[test]
    fn negated_wide_or_negative_id_filters_are_not_routed() {
        for (op, values) in [
            ("NotEqual", "[\"1\"]"),
            ("InMap", "[\"0:1000\"]"),
            ("Equal", "[\"-1\"]"),
            ("GreaterThan", "[\"1\"]"),
        ] {
            let sel = format!(
                "    selectors:\n    - matchArgs:\n      - index: 0\n        operator: {op}\n        values: {values}\n"
            );
            assert_eq!(route("sys_exit", &sel), None, "{op} {values}");
        }
    }

    #[test]
    fn small_ranges_and_intersections_expand() {
        let sel = "    selectors:
    - matchArgs:
      - index: 0
        operator: InMap
        values: [\"60:62\"]
      - index: 0
        operator: Equal
        values: [\"59\", \"61\", \"62\"]
";
        let r = route("sys_exit", sel).expect("routed");
        assert_eq!(r.ids, BTreeSet::from([61, 62]));
    }

    #[test]
    fn the_id_bitmap_admits_exactly_the_routed_ids() {
        let r = route("sys_enter", KEXEC).expect("routed");
        let words = r.id_bitmap().expect("ids below 512");
        for id in 0..PREFILTER_IDS {
            let admitted = words[id as usize / 64] >> (id % 64) & 1 == 1;
            assert_eq!(admitted, r.ids.contains(&id), "id {id}");
        }
        let edge = SyscallRoute {
            ids: BTreeSet::from([0, 63, 64, PREFILTER_IDS - 1]),
            ..r.clone()
        };
        let words = edge.id_bitmap().expect("ids below 512");
        assert_eq!(words[0], 1 | 1 << 63);
        assert_eq!(words[1], 1);
        assert_eq!(words[PREFILTER_WORDS - 1], 1 << 63);
        let beyond = SyscallRoute {
            ids: BTreeSet::from([59, PREFILTER_IDS]),
            ..r
        };
        assert_eq!(beyond.id_bitmap(), None);
    }

    /// A `matchArgs` filter on the id: an operator and its values (YAML).
    fn id_filter() -> impl Strategy<Value = String> {
        let value = 0u32..80;
        let values = prop::collection::vec(value.clone(), 1..4).prop_map(|v| {
            v.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let range = (0u32..80, 0u32..12).prop_map(|(a, w)| format!("\"{a}:{}\"", a + w));
        prop_oneof![
            values
                .clone()
                .prop_map(|v| format!("Equal\n        values: [{v}]")),
            values
                .clone()
                .prop_map(|v| format!("NotEqual\n        values: [{v}]")),
            prop_oneof![values.clone(), range.clone()]
                .prop_map(|v| format!("InMap\n        values: [{v}]")),
            range.prop_map(|v| format!("NotInMap\n        values: [{v}]")),
            value
                .clone()
                .prop_map(|n| format!("GreaterThan\n        values: [\"{n}\"]")),
            value.prop_map(|n| format!("LessThan\n        values: [\"{n}\"]")),
        ]
    }

    /// A selector's id filters: mostly one that admits a set (which the
    /// route needs) among others.
    fn id_filters() -> impl Strategy<Value = Vec<String>> {
        let positive = prop_oneof![
            (0u32..80).prop_map(|n| format!("Equal\n        values: [\"{n}\"]")),
            (0u32..80, 0u32..12)
                .prop_map(|(a, w)| format!("InMap\n        values: [\"{a}:{}\"]", a + w)),
        ];
        (
            prop::bool::weighted(0.85),
            positive,
            prop::collection::vec(id_filter(), 0..3),
        )
            .prop_map(|(with, first, mut rest)| {
                if with {
                    rest.insert(0, first);
                }
                rest
            })
    }

    proptest! {
        /// Soundness of the route, and so of the id prefilter: every id
        /// for which the reference evaluator finds a matching selector is
        /// one of the route's ids.
        #[test]
        fn every_id_a_selector_matches_is_routed(
            selectors in prop::collection::vec(id_filters(), 1..4),
        ) {
            let mut yaml = String::from("    selectors:\n");
            for filters in &selectors {
                if filters.is_empty() {
                    yaml += "    - matchActions:\n      - action: Post\n";
                    continue;
                }
                yaml += "    - matchArgs:\n";
                for f in filters {
                    yaml += &format!("      - index: 0\n        operator: {f}\n");
                }
            }
            let spec = raw_syscalls_spec("sys_enter", &yaml);
            let Some(route) = syscall_route(&first_hook(&spec)) else {
                return Ok(());
            };
            let p = policy(&spec);
            let reference = CompiledSelectors::new(&hooks(&p)[0].hook(), &ResolvedLists::new())
                .expect("the reference compiles what the compiler did");
            for id in 0..100u32 {
                let cx = Context {
                    args: vec![ArgValue::Signed(i64::from(id))],
                    ..Context::default()
                };
                if reference.evaluate(&cx).is_some() {
                    prop_assert!(route.ids.contains(&id), "id {id} matches but is not in {:?}\n{spec}", route.ids);
                }
            }
        }
    }

    #[test]
    fn other_tracepoints_are_not_routed() {
        let mut hook = hook("sys_enter", KEXEC);
        hook.attach = Attach::Tracepoint {
            subsystem: "syscalls".into(),
            event: "sys_enter_kexec_load".into(),
        };
        assert_eq!(syscall_route(&hook), None);
    }
}
