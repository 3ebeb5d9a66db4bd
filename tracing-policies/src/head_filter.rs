//! The head prefilter of syscall hooks: which hooks of a syscall cannot
//! match a call, decided from the first bytes of one user string argument.
//!
//! A syscall hook such as "`openat` of a path starting with `/etc/shadow`"
//! runs on every `openat` of the machine, and nearly every call fails its
//! filters. Evaluating them reads the whole path from user memory, copies
//! it into trie keys and walks the filters, which costs several times the
//! syscall program's entry. When every selector of a hook requires a user
//! string argument to begin with (`Prefix`) or be (`Equal`) one of some
//! values, a string whose first [`HEAD_BYTES`] bytes begin none of those
//! values cannot match the hook. The kernel reads those bytes once per call
//! and compares them with the [`Head`]s of the syscall's table entry
//! ([`SyscallHeads`]); hooks that cannot match are not run. The filters
//! still decide for the calls that pass, so the prefilter never changes what
//! matches: it is a necessary condition of the hook's selectors.

use std::collections::BTreeMap;

use crate::compile::{ArgRead, ArgSource, CompiledHook, FilterPlan};

/// Bytes of the string the kernel compares.
pub const HEAD_BYTES: usize = 8;

/// Most heads in a syscall's table entry.
pub const MAX_HEADS: usize = 16;

/// The first bytes of a value: a string can begin with the value only if
/// its head word ([`head_word`]) masked with `mask` equals `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Head {
    /// The value's first bytes, little-endian (byte 0 lowest).
    pub value: u64,
    /// The bytes that count: `0xff` per byte of the value's head.
    pub mask: u64,
}

impl Head {
    /// The head of value `bytes`; `whole` (an `Equal` value) also requires
    /// the string to end after the value when that is within the head.
    pub fn of(bytes: &[u8], whole: bool) -> Self {
        let mut n = bytes.len().min(HEAD_BYTES);
        let mut value = 0u64;
        for (i, b) in bytes.iter().take(n).enumerate() {
            value |= u64::from(*b) << (8 * i);
        }
        if whole && n < HEAD_BYTES {
            // The NUL after the value: byte n is 0 in the value already.
            n += 1;
        }
        let mask = if n == HEAD_BYTES {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Self { value, mask }
    }

    /// Whether a string with head word `word` may begin with the value.
    pub fn admits(self, word: u64) -> bool {
        word & self.mask == self.value
    }

    /// Whether every word `other` admits, `self` admits too.
    fn covers(self, other: Head) -> bool {
        self.mask & other.mask == self.mask && other.value & self.mask == self.value
    }
}

/// The word the kernel compares for string `s`: its first [`HEAD_BYTES`]
/// bytes little-endian, zero from its end (the NUL) on.
pub fn head_word(s: &[u8]) -> u64 {
    s.iter()
        .take(HEAD_BYTES)
        .take_while(|&&b| b != 0)
        .enumerate()
        .fold(0, |w, (i, b)| w | u64::from(*b) << (8 * i))
}

/// A hook's prefilter: it can only match a call whose syscall argument
/// `reg`, a user string, begins with one of `heads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookHeads {
    /// Syscall argument register (0-5).
    pub reg: u8,
    /// Sorted, none covering another.
    pub heads: Vec<Head>,
}

/// The prefilter of `hook`, if every selector has a `Prefix` or `Equal`
/// filter on one user string syscall argument (the same for all).
pub fn hook_heads(hook: &CompiledHook) -> Option<HookHeads> {
    let reg_of = |arg: u8| match hook.args.get(usize::from(arg)) {
        Some(a) if a.read == ArgRead::UserString => match a.source {
            ArgSource::Syscall(reg) => Some(reg),
            _ => None,
        },
        _ => None,
    };
    // Per register, per selector: the heads of its most selective filter.
    let mut per_reg: BTreeMap<u8, Vec<Vec<Head>>> = BTreeMap::new();
    for (i, sel) in hook.selectors.iter().enumerate() {
        for f in &sel.filters {
            let FilterPlan::ArgStr {
                arg,
                negate: false,
                entries,
            } = f
            else {
                continue;
            };
            let Some(reg) = reg_of(*arg) else { continue };
            let heads = minimal(entries.iter().map(|(b, whole)| Head::of(b, *whole)));
            let sels = per_reg.entry(reg).or_default();
            sels.resize(i + 1, Vec::new());
            let slot = &mut sels[i];
            if slot.is_empty() || narrower(&heads, slot) {
                *slot = heads;
            }
        }
    }
    per_reg
        .into_iter()
        .filter(|(_, sels)| {
            sels.len() == hook.selectors.len() && sels.iter().all(|h| !h.is_empty())
        })
        .map(|(reg, sels)| HookHeads {
            reg,
            heads: minimal(sels.into_iter().flatten()),
        })
        .filter(|h| h.heads.iter().all(|x| x.mask != 0))
        .min_by_key(|h| h.heads.len())
}

/// Whether heads `a` admit less than `b`: none admitting every word,
/// then fewer, then longer.
fn narrower(a: &[Head], b: &[Head]) -> bool {
    let width = |h: &[Head]| {
        let shortest = h.iter().map(|x| x.mask.count_ones()).min().unwrap_or(0);
        (shortest == 0, h.len(), std::cmp::Reverse(shortest))
    };
    width(a) < width(b)
}

/// `heads` sorted and deduplicated, without those another covers.
fn minimal(heads: impl IntoIterator<Item = Head>) -> Vec<Head> {
    let mut all: Vec<Head> = heads.into_iter().collect();
    all.sort();
    all.dedup();
    all.iter()
        .copied()
        .filter(|h| !all.iter().any(|o| o != h && o.covers(*h)))
        .collect()
}

/// The prefilter of one syscall's table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallHeads {
    /// Syscall argument register whose head is read.
    pub reg: u8,
    /// Bit i: the hook in slot i is not run when no head admits the word.
    pub skip: u32,
    /// The union of those hooks' heads, at most [`MAX_HEADS`].
    pub heads: Vec<Head>,
}

/// The prefilter of a syscall whose slots hold hooks with prefilters
/// `slots` (`None`: the hook always runs). The register most hooks filter
/// on wins (the lowest of a tie); its hooks are taken in slot order while
/// the union of their heads fits in [`MAX_HEADS`].
pub fn syscall_heads(slots: &[Option<&HookHeads>]) -> Option<SyscallHeads> {
    let mut count: BTreeMap<u8, usize> = BTreeMap::new();
    for h in slots.iter().flatten() {
        *count.entry(h.reg).or_default() += 1;
    }
    let reg = count
        .iter()
        .max_by_key(|&(&reg, &n)| (n, std::cmp::Reverse(reg)))
        .map(|(&reg, _)| reg)?;
    let mut skip = 0u32;
    let mut heads: Vec<Head> = Vec::new();
    for (slot, h) in slots.iter().enumerate().take(32) {
        let Some(h) = h.filter(|h| h.reg == reg) else {
            continue;
        };
        let union = minimal(heads.iter().chain(&h.heads).copied());
        if union.len() <= MAX_HEADS {
            heads = union;
            skip |= 1 << slot;
        }
    }
    (skip != 0).then_some(SyscallHeads { reg, skip, heads })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_host::first_hook;

    /// The hook of a `sys_openat` policy (arguments: dirfd, path, flags)
    /// with `selectors` (YAML, indented for `selectors:`), compiled.
    fn openat(selectors: &str) -> CompiledHook {
        first_hook(&format!(
            "  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 0, type: int}}
    - {{index: 1, type: string}}
    - {{index: 2, type: int}}
{selectors}"
        ))
    }

    fn heads_of(selectors: &str) -> Option<HookHeads> {
        hook_heads(&openat(selectors))
    }

    const SENSITIVE: &str = "    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: [/etc/shadow, /etc/gshadow, /etc/ssh/ssh_host_, /etc/ssh/sshd_config, /root]
      matchBinaries:
      - operator: NotIn
        values: [/usr/sbin/sshd]
    - matchArgs:
      - index: 1
        operator: Equal
        values: [/etc/passwd, /a]
      - index: 2
        operator: Mask
        values: ['1']
";

    #[test]
    fn heads_are_the_first_bytes_and_an_equal_values_end() {
        let h = Head::of(b"/etc/shadow", false);
        assert_eq!(h.mask, u64::MAX);
        assert!(h.admits(head_word(b"/etc/shadow-")));
        assert!(h.admits(head_word(b"/etc/shaXYZ")));
        assert!(!h.admits(head_word(b"/etc/passwd")));
        assert!(!h.admits(head_word(b"/etc/sh")));

        let root = Head::of(b"/root", false);
        assert!(root.admits(head_word(b"/root/.ssh/id")));
        assert!(root.admits(head_word(b"/rootfs")));
        assert!(!root.admits(head_word(b"/roo")));

        let a = Head::of(b"/a", true);
        assert!(a.admits(head_word(b"/a")));
        assert!(a.admits(head_word(b"/a\0garbage")));
        assert!(!a.admits(head_word(b"/ab")));
    }

    #[test]
    fn every_selector_contributes_its_string_filter() {
        let h = heads_of(SENSITIVE).expect("prefiltered");
        assert_eq!(h.reg, 1);
        let words: Vec<&[u8]> = vec![
            b"/etc/shadow",
            b"/etc/ssh/x",
            b"/root",
            b"/etc/passwd",
            b"/a",
        ];
        for w in words {
            assert!(h.heads.iter().any(|x| x.admits(head_word(w))), "{w:?}");
        }
        // /etc/ssh/ssh_host_ and /etc/ssh/sshd_config share their head.
        assert_eq!(h.heads.len(), 6);
        for w in [&b"/tmp/x"[..], b"/etc/hosts", b"/ro", b"", b"/ab"] {
            assert!(!h.heads.iter().any(|x| x.admits(head_word(w))), "{w:?}");
        }
    }

    #[test]
    fn hooks_that_can_match_without_their_string_have_no_prefilter() {
        // A selector without a string filter.
        let open = format!(
            "{SENSITIVE}    - matchBinaries:\n      - operator: In\n        values: [/bin/cat]\n"
        );
        assert_eq!(heads_of(&open), None);
        // Not-forms and postfixes do not bound the head.
        for op in ["NotPrefix", "NotEqual", "Postfix"] {
            let sel = format!(
                "    selectors:\n    - matchArgs:\n      - index: 1\n        operator: {op}\n        values: [/etc]\n"
            );
            assert_eq!(heads_of(&sel), None, "{op}");
        }
        // No selectors: every call posts.
        assert_eq!(heads_of(""), None);
        // An integer argument.
        let int = "    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values: ['3']\n";
        assert_eq!(heads_of(int), None);
    }

    #[test]
    fn a_selector_takes_its_narrowest_string_filter() {
        let sel = "    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: [/, /x]
      - index: 1
        operator: Equal
        values: [/etc/hosts]
";
        let h = heads_of(sel).expect("prefiltered");
        assert_eq!(h.heads, vec![Head::of(b"/etc/hosts", true)]);
    }

    #[test]
    fn the_syscall_takes_the_register_most_hooks_filter_on() {
        let on = |reg: u8, v: &[u8]| HookHeads {
            reg,
            heads: vec![Head::of(v, false)],
        };
        let (a, b, c) = (on(1, b"/etc"), on(0, b"/x"), on(1, b"/root"));
        let s = syscall_heads(&[Some(&a), None, Some(&b), Some(&c)]).expect("prefiltered");
        assert_eq!(s.reg, 1);
        assert_eq!(s.skip, 0b1001);
        assert_eq!(s.heads.len(), 2);
        assert_eq!(syscall_heads(&[None, None]), None);
    }

    #[test]
    fn hooks_past_the_head_limit_always_run() {
        let hooks: Vec<HookHeads> = (0..3u8)
            .map(|i| HookHeads {
                reg: 1,
                heads: (0..7u8)
                    .map(|j| Head::of(&[b'/', b'a' + i, b'0' + j], false))
                    .collect(),
            })
            .collect();
        let slots: Vec<Option<&HookHeads>> = hooks.iter().map(Some).collect();
        let s = syscall_heads(&slots).expect("prefiltered");
        assert_eq!(s.skip, 0b011);
        assert_eq!(s.heads.len(), 14);
    }

    proptest! {
        /// Soundness: a string the prefilter turns away matches none of
        /// the filter's values, whatever the values and the string.
        #[test]
        fn a_rejected_string_matches_no_value(
            values in prop::collection::vec(("[/ae]{0,10}", any::<bool>()), 1..6),
            s in "[/ae]{0,12}",
        ) {
            let heads = minimal(values.iter().map(|(v, whole)| Head::of(v.as_bytes(), *whole)));
            let word = head_word(s.as_bytes());
            if !heads.iter().any(|h| h.admits(word)) {
                for (v, whole) in &values {
                    let m = if *whole { s == *v } else { s.starts_with(v.as_str()) };
                    prop_assert!(!m, "{s:?} matches {v:?} but no head admits it");
                }
            }
        }
    }
}
