//! Where compiled hooks live in the runtime maps: hook ids, ranges of
//! filters and selectors, value-set ids and binary-set bits. Pure
//! bookkeeping: [`Layout::place`] turns a [`CompiledHook`] into the map
//! entries to write, [`Layout::release`] gives its space back.

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use palisade_bpf::abi::runtime::{
    self as rt, argkind, argsrc, filt, sockpart, ArgDesc, Filter, Hook, NumKey, Sel, StrKey,
};
use palisade_tracing_policies::compile::{
    Action, ArgRead, ArgSource, BinaryMatch, BinarySet, CompiledHook, FilterPlan, SockField,
};
use palisade_tracing_policies::model::{CapabilitySet, RateLimitScope};

/// Why a hook does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A map is full.
    #[error("{what} is full ({max} entries); remove tracing policies")]
    Full {
        /// Which table.
        what: &'static str,
        /// Its size.
        max: u32,
    },
    /// A hook has more filters than the kernel walks.
    #[error("{path} has {n} filters; the kernel evaluates at most {max} per hook")]
    TooManyFilters {
        /// YAML path of the hook.
        path: String,
        /// Its filters.
        n: usize,
        /// The limit.
        max: u32,
    },
    /// A string value does not fit a key.
    #[error("{path}: {reason}")]
    Value {
        /// YAML path of the hook.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// First-fit allocator of index ranges in an array map.
#[derive(Debug, Clone)]
struct Ranges {
    free: BTreeMap<u32, u32>,
    what: &'static str,
    max: u32,
}

impl Ranges {
    fn new(what: &'static str, max: u32) -> Self {
        Self {
            free: BTreeMap::from([(0, max)]),
            what,
            max,
        }
    }

    fn alloc(&mut self, n: u32) -> Result<u32, LayoutError> {
        let n = n.max(1);
        let (&start, &len) =
            self.free
                .iter()
                .find(|(_, &len)| len >= n)
                .ok_or(LayoutError::Full {
                    what: self.what,
                    max: self.max,
                })?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Ok(start)
    }

    fn release(&mut self, start: u32, n: u32) {
        let n = n.max(1);
        let mut start = start;
        let mut len = n;
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }
}

/// A binary set in use.
#[derive(Debug, Clone)]
struct BinSlot {
    set: BinarySet,
    set_id: u32,
    follow_users: u32,
    users: u32,
}

/// The map entries of one placed hook, and what to free when it goes.
#[derive(Clone)]
pub struct Placed {
    /// Hook id (index in `pal_rt_hooks`).
    pub hook_id: u32,
    /// The hook entry (written last, with `HOOK_ACTIVE`).
    pub hook: Hook,
    /// Filters at `hook.first_filter ..`.
    pub filters: Vec<Filter>,
    /// Selectors at `hook.first_sel ..`.
    pub sels: Vec<Sel>,
    /// Integer/address set entries.
    pub num: Vec<Key<NumKey>>,
    /// String set entries.
    pub strs: Vec<Key<StrKey>>,
    /// Binary-set bits this hook references, each with whether that
    /// reference follows children.
    pub bins: Vec<(u8, bool)>,
}

/// Binary-set changes the agent must write (`pal_rt_binsets`, string
/// entries, and the bits of processes already running).
#[derive(Clone, Default)]
pub struct BinsetChange {
    /// New bits: (bit, kind, set id, entries).
    pub added: Vec<(u8, u32, u32, Vec<Key<StrKey>>)>,
    /// Freed bits with the entries to delete.
    pub removed: Vec<(u8, Vec<Key<StrKey>>)>,
}

impl std::fmt::Debug for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placed")
            .field("hook_id", &self.hook_id)
            .field("hook", &self.hook)
            .field("filters", &self.filters)
            .field("sels", &self.sels)
            .field("num", &self.num.len())
            .field("strs", &self.strs.len())
            .field("bins", &self.bins)
            .finish()
    }
}

/// The allocation state of the runtime maps.
#[derive(Debug, Clone)]
pub struct Layout {
    hook_ids: Ranges,
    filters: Ranges,
    sels: Ranges,
    next_set: u32,
    bins: Vec<Option<BinSlot>>,
}

impl Default for Layout {
    fn default() -> Self {
        Self::new()
    }
}

fn binset_kind(m: BinaryMatch) -> u32 {
    match m {
        BinaryMatch::Exact => rt::BINSET_EXACT,
        BinaryMatch::Prefix => rt::BINSET_PREFIX,
        BinaryMatch::Postfix => rt::BINSET_POSTFIX,
    }
}

fn str_entries(set_id: u32, set: &BinarySet) -> Result<Vec<Key<StrKey>>, String> {
    set.values
        .iter()
        .map(|v| {
            let (bytes, nul): (Vec<u8>, bool) = match set.kind {
                BinaryMatch::Exact => (v.as_bytes().to_vec(), true),
                BinaryMatch::Prefix => (v.as_bytes().to_vec(), false),
                BinaryMatch::Postfix => (v.bytes().rev().collect(), false),
            };
            StrKey::string(set_id, &bytes, nul).map_err(|e| format!("binary {v:?}: {e}"))
        })
        .collect()
}

impl Layout {
    /// Empty maps.
    pub fn new() -> Self {
        Self {
            hook_ids: Ranges::new("the hook table", rt::MAX_HOOKS),
            filters: Ranges::new("the filter table", rt::MAX_FILTERS),
            sels: Ranges::new("the selector table", rt::MAX_SELS),
            next_set: 1,
            bins: vec![None; rt::MAX_BINSETS],
        }
    }

    fn set_id(&mut self) -> u32 {
        let id = self.next_set;
        self.next_set = self.next_set.wrapping_add(1).max(1);
        id
    }

    /// The follow mask (binary sets with followChildren users) and the
    /// number of bits in use (highest + 1).
    pub fn binset_config(&self) -> ([u64; 2], u32) {
        let mut mask = [0u64; 2];
        let mut n = 0;
        for (i, b) in self.bins.iter().enumerate() {
            if let Some(b) = b {
                n = i as u32 + 1;
                if b.follow_users > 0 {
                    mask[i / 64] |= 1 << (i % 64);
                }
            }
        }
        (mask, n)
    }

    /// The binary sets in use, by bit (for the user-space process scan).
    pub fn binsets(&self) -> Vec<(u8, BinarySet)> {
        self.bins
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i as u8, b.set.clone())))
            .collect()
    }

    fn bin_bit(
        &mut self,
        set: &BinarySet,
        follow: bool,
        change: &mut BinsetChange,
        path: &str,
    ) -> Result<u8, LayoutError> {
        if let Some(i) = self
            .bins
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| &b.set == set))
        {
            if let Some(b) = self.bins[i].as_mut() {
                b.users += 1;
                b.follow_users += u32::from(follow);
            }
            return Ok(i as u8);
        }
        let i = self
            .bins
            .iter()
            .position(Option::is_none)
            .ok_or(LayoutError::Full {
                what: "the binary-set table",
                max: rt::MAX_BINSETS as u32,
            })?;
        let set_id = self.set_id();
        let entries = str_entries(set_id, set).map_err(|reason| LayoutError::Value {
            path: path.to_owned(),
            reason,
        })?;
        change
            .added
            .push((i as u8, binset_kind(set.kind), set_id, entries));
        self.bins[i] = Some(BinSlot {
            set: set.clone(),
            set_id,
            follow_users: u32::from(follow),
            users: 1,
        });
        Ok(i as u8)
    }

    /// Places a hook; the caller writes the entries (and the binset
    /// changes) and then the hook entry. On error nothing stays taken and
    /// `change` is to be discarded.
    pub fn place(
        &mut self,
        hook: &CompiledHook,
        change: &mut BinsetChange,
    ) -> Result<Placed, LayoutError> {
        let mut taken = Vec::new();
        match self.fill(hook, change, &mut taken) {
            Ok(placed) => Ok(placed),
            Err(e) => {
                let mut undo = BinsetChange::default();
                for (bit, follow) in taken {
                    self.drop_bin(bit, follow, &mut undo);
                }
                Err(e)
            }
        }
    }

    /// [`Layout::place`] without the undo; `taken` records the binary-set
    /// bits referenced so far.
    fn fill(
        &mut self,
        hook: &CompiledHook,
        change: &mut BinsetChange,
        taken: &mut Vec<(u8, bool)>,
    ) -> Result<Placed, LayoutError> {
        let nfilters: usize = hook.selectors.iter().map(|s| s.filters.len()).sum();
        if nfilters > rt::MAX_FILTERS_PER_HOOK as usize {
            return Err(LayoutError::TooManyFilters {
                path: hook.path.clone(),
                n: nfilters,
                max: rt::MAX_FILTERS_PER_HOOK,
            });
        }
        let mut placed = Placed {
            hook_id: 0,
            hook: Hook::default(),
            filters: Vec::with_capacity(nfilters),
            sels: Vec::with_capacity(hook.selectors.len()),
            num: Vec::new(),
            strs: Vec::new(),
            bins: Vec::new(),
        };
        let value_err = |reason: String| LayoutError::Value {
            path: hook.path.clone(),
            reason,
        };
        for (si, sel) in hook.selectors.iter().enumerate() {
            for f in cheapest_first(&sel.filters) {
                let mut e = Filter {
                    sel: si as u16,
                    ..Filter::default()
                };
                let negate = |n: bool| if n { rt::FILTF_NEGATE } else { 0 };
                let invert = |n: bool| if n { rt::FILTF_INVERT } else { 0 };
                let side = |dst: bool| if dst { sockpart::DST } else { sockpart::SRC };
                match f {
                    FilterPlan::True => e.kind = filt::TRUE,
                    FilterPlan::ArgNum {
                        arg,
                        signed,
                        negate: n,
                        entries,
                    } => {
                        e.kind = filt::ARG_NUM;
                        e.arg = *arg;
                        e.flags = negate(*n) | if *signed { rt::FILTF_SIGNED } else { 0 };
                        e.set_id = self.set_id();
                        placed.num.extend(
                            entries
                                .iter()
                                .map(|&(v, bits)| NumKey::integer(e.set_id, v, bits)),
                        );
                    }
                    FilterPlan::ArgStr {
                        arg,
                        negate: n,
                        entries,
                    } => {
                        e.kind = filt::ARG_STR;
                        e.arg = *arg;
                        e.flags = negate(*n);
                        e.set_id = self.set_id();
                        for (bytes, nul) in entries {
                            placed.strs.push(
                                StrKey::string(e.set_id, bytes, *nul)
                                    .map_err(|x| value_err(x.to_string()))?,
                            );
                        }
                    }
                    FilterPlan::ArgStrPostfix {
                        arg,
                        negate: n,
                        entries,
                    } => {
                        e.kind = filt::ARG_STR_REV;
                        e.arg = *arg;
                        e.flags = negate(*n);
                        e.set_id = self.set_id();
                        for bytes in entries {
                            placed.strs.push(
                                StrKey::string(e.set_id, bytes, false)
                                    .map_err(|x| value_err(x.to_string()))?,
                            );
                        }
                    }
                    FilterPlan::ArgGt { arg, signed, value }
                    | FilterPlan::ArgLt { arg, signed, value } => {
                        e.kind = if matches!(f, FilterPlan::ArgGt { .. }) {
                            filt::ARG_GT
                        } else {
                            filt::ARG_LT
                        };
                        e.arg = *arg;
                        e.flags = if *signed { rt::FILTF_SIGNED } else { 0 };
                        e.value = *value;
                    }
                    FilterPlan::ArgMask { arg, value } => {
                        e.kind = filt::ARG_MASK;
                        e.arg = *arg;
                        e.value = *value;
                    }
                    FilterPlan::Binary {
                        set,
                        negate: n,
                        follow,
                    } => {
                        e.kind = filt::BINARY;
                        e.flags = negate(*n) | if *follow { rt::FILTF_FOLLOW } else { 0 };
                        e.aux = self.bin_bit(set, *follow, change, &hook.path)?;
                        taken.push((e.aux, *follow));
                    }
                    FilterPlan::ParentBinary { set, negate: n } => {
                        e.kind = filt::PARENT_BINARY;
                        e.flags = negate(*n);
                        e.aux = self.bin_bit(set, false, change, &hook.path)?;
                        taken.push((e.aux, false));
                    }
                    FilterPlan::Pid {
                        entries,
                        negate: n,
                        namespace_pid,
                        follow,
                    } => {
                        e.kind = filt::PID;
                        e.flags = negate(*n)
                            | if *namespace_pid { rt::FILTF_NSPID } else { 0 }
                            | if *follow { rt::FILTF_FOLLOW } else { 0 };
                        e.set_id = self.set_id();
                        placed.num.extend(
                            entries
                                .iter()
                                .map(|&(v, bits)| NumKey::integer(e.set_id, v, bits)),
                        );
                    }
                    FilterPlan::Namespace {
                        ns,
                        negate: n,
                        entries,
                    } => {
                        e.kind = filt::NAMESPACE;
                        e.flags = negate(*n);
                        e.aux = *ns;
                        e.set_id = self.set_id();
                        placed.num.extend(
                            entries
                                .iter()
                                .map(|&(v, bits)| NumKey::integer(e.set_id, v, bits)),
                        );
                    }
                    FilterPlan::SockPort {
                        arg,
                        dst,
                        negate: n,
                        entries,
                    } => {
                        e.kind = filt::SOCK_PORT;
                        e.arg = *arg;
                        e.aux = side(*dst);
                        e.flags = invert(*n);
                        e.set_id = self.set_id();
                        placed.num.extend(
                            entries
                                .iter()
                                .map(|&(v, bits)| NumKey::integer(e.set_id, v, bits)),
                        );
                    }
                    FilterPlan::SockPortPriv {
                        arg,
                        dst,
                        negate: n,
                    } => {
                        e.kind = filt::SOCK_PRIV;
                        e.arg = *arg;
                        e.aux = side(*dst);
                        e.flags = invert(*n);
                    }
                    FilterPlan::SockAddr {
                        arg,
                        dst,
                        negate: n,
                        prefixes,
                    } => {
                        e.kind = filt::SOCK_ADDR;
                        e.arg = *arg;
                        e.aux = side(*dst);
                        e.flags = invert(*n);
                        // IPv4 prefixes in set_id, IPv6 in value.
                        e.set_id = self.set_id();
                        let v6 = self.set_id();
                        e.value = u64::from(v6);
                        placed.num.extend(prefixes.iter().map(|&(addr, bits)| {
                            let set = if addr.is_ipv4() { e.set_id } else { v6 };
                            NumKey::address(set, addr, u32::from(bits))
                        }));
                    }
                    FilterPlan::SockField {
                        arg,
                        field,
                        entries,
                    } => {
                        e.kind = filt::SOCK_FIELD;
                        e.arg = *arg;
                        e.aux = match field {
                            SockField::Family => sockpart::FAMILY,
                            SockField::Protocol => sockpart::PROTOCOL,
                            SockField::State => sockpart::STATE,
                        };
                        e.set_id = self.set_id();
                        placed.num.extend(
                            entries
                                .iter()
                                .map(|&(v, bits)| NumKey::integer(e.set_id, v, bits)),
                        );
                    }
                    FilterPlan::Caps {
                        set,
                        negate: n,
                        mask,
                    } => {
                        e.kind = filt::CAPS;
                        e.flags = negate(*n);
                        e.aux = match set {
                            CapabilitySet::Effective => rt::CAPS_EFFECTIVE,
                            CapabilitySet::Inheritable => rt::CAPS_INHERITABLE,
                            CapabilitySet::Permitted => rt::CAPS_PERMITTED,
                        };
                        e.value = *mask;
                    }
                }
                placed.filters.push(e);
            }
            let a = &sel.actions;
            placed.sels.push(Sel {
                action: match a.action {
                    Action::Post => rt::act::POST,
                    Action::NoPost => rt::act::NOPOST,
                    Action::Sigkill => rt::act::SIGKILL,
                    Action::Signal => rt::act::SIGNAL,
                    Action::Override => rt::act::OVERRIDE,
                },
                post: u32::from(a.post),
                signal: a.signal,
                r#override: a.override_errno,
                rate_ns: a.rate_ns,
                rate_scope: match a.rate_scope {
                    RateLimitScope::Thread => rt::rate::THREAD,
                    RateLimitScope::Process => rt::rate::PROCESS,
                    RateLimitScope::Global => rt::rate::GLOBAL,
                },
                pad: 0,
            });
        }
        let mut args = [ArgDesc::default(); rt::MAX_ARGS];
        for (i, a) in hook.args.iter().enumerate().take(rt::MAX_ARGS) {
            let d = &mut args[i];
            match a.source {
                ArgSource::Syscall(r) => {
                    d.source = argsrc::SYSCALL;
                    d.reg = r;
                }
                ArgSource::TpField { offset } => {
                    d.source = argsrc::TP_FIELD;
                    d.offset = offset;
                }
                ArgSource::TpDataLoc { offset } => {
                    d.source = argsrc::TP_DATALOC;
                    d.offset = offset;
                }
                ArgSource::Reg(r) => {
                    d.source = argsrc::REG;
                    d.reg = r;
                }
                ArgSource::FanotifyFile => d.source = argsrc::NONE,
            }
            match a.read {
                ArgRead::Int { size, signed } => {
                    d.kind = argkind::INT;
                    d.size = size;
                    d.flags = if signed { rt::ARGF_SIGNED } else { 0 };
                }
                ArgRead::UserString => d.kind = argkind::USTR,
                ArgRead::KernelString => d.kind = argkind::KSTR,
                ArgRead::File => d.kind = argkind::FILE,
                ArgRead::Path => d.kind = argkind::PATH,
                ArgRead::Bprm => d.kind = argkind::BPRM,
                ArgRead::Sockaddr => d.kind = argkind::SOCKADDR,
                ArgRead::Sock => d.kind = argkind::SOCK,
                ArgRead::Skb => d.kind = argkind::SKB,
            }
        }

        // Space last, so that an error above leaves only binary-set bits
        // taken, which `place` gives back.
        let hook_id = self.hook_ids.alloc(1)?;
        let first_filter = match self.filters.alloc(placed.filters.len() as u32) {
            Ok(f) => f,
            Err(e) => {
                self.hook_ids.release(hook_id, 1);
                return Err(e);
            }
        };
        let first_sel = match self.sels.alloc(placed.sels.len() as u32) {
            Ok(s) => s,
            Err(e) => {
                self.hook_ids.release(hook_id, 1);
                self.filters
                    .release(first_filter, placed.filters.len() as u32);
                return Err(e);
            }
        };
        placed.hook_id = hook_id;
        placed.hook = Hook {
            flags: rt::HOOK_ACTIVE | if hook.monitor { rt::HOOK_MONITOR } else { 0 },
            first_filter,
            nfilters: placed.filters.len() as u32,
            first_sel,
            nsels: placed.sels.len() as u32,
            nargs: hook.args.len().min(rt::MAX_ARGS) as u32,
            args,
        };
        placed.bins = taken.clone();
        Ok(placed)
    }

    /// Gives back a placed hook's space and binary-set bits.
    pub fn release(&mut self, placed: &Placed, change: &mut BinsetChange) {
        self.hook_ids.release(placed.hook_id, 1);
        self.filters
            .release(placed.hook.first_filter, placed.hook.nfilters);
        self.sels.release(placed.hook.first_sel, placed.hook.nsels);
        for &(bit, follow) in &placed.bins {
            self.drop_bin(bit, follow, change);
        }
    }

    fn drop_bin(&mut self, b: u8, follow: bool, change: &mut BinsetChange) {
        let Some(slot) = self.bins.get_mut(b as usize) else {
            return;
        };
        let Some(s) = slot.as_mut() else {
            return;
        };
        s.users = s.users.saturating_sub(1);
        if follow {
            s.follow_users = s.follow_users.saturating_sub(1);
        }
        if s.users == 0 {
            let entries = str_entries(s.set_id, &s.set).unwrap_or_default();
            change.removed.push((b, entries));
            *slot = None;
        }
    }
}

/// What evaluating `f` costs the kernel, in ranks: comparisons of a value
/// already read, then one map lookup, then a lookup in the process table,
/// then reads of the task, then a string copied into an LPM key, then a
/// string reversed or a socket read.
fn eval_cost(f: &FilterPlan) -> u8 {
    match f {
        FilterPlan::True
        | FilterPlan::ArgGt { .. }
        | FilterPlan::ArgLt { .. }
        | FilterPlan::ArgMask { .. } => 0,
        FilterPlan::ArgNum { .. } | FilterPlan::Pid { .. } => 1,
        FilterPlan::Binary { .. } | FilterPlan::ParentBinary { .. } => 2,
        FilterPlan::Namespace { .. } | FilterPlan::Caps { .. } => 3,
        FilterPlan::ArgStr { .. } => 4,
        FilterPlan::ArgStrPostfix { .. }
        | FilterPlan::SockPort { .. }
        | FilterPlan::SockPortPriv { .. }
        | FilterPlan::SockAddr { .. }
        | FilterPlan::SockField { .. } => 5,
    }
}

/// A selector's filters in the order the kernel evaluates them: cheapest
/// first (stable). They are ANDed and free of side effects, so the order
/// does not change the result; the kernel stops at the first that fails.
fn cheapest_first(filters: &[FilterPlan]) -> Vec<&FilterPlan> {
    let mut v: Vec<&FilterPlan> = filters.iter().collect();
    v.sort_by_key(|f| eval_cost(f));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_tracing_policies::compile::{ActionPlan, Attach, HookKind, SelectorPlan};

    fn hook(filters: Vec<FilterPlan>) -> CompiledHook {
        CompiledHook {
            path: "spec.kprobes[0]".into(),
            attach: Attach::Syscall { nr: 105 },
            kind: HookKind::Kprobe,
            function_name: "sys_setuid".into(),
            args: Vec::new(),
            selectors: vec![SelectorPlan {
                filters,
                actions: ActionPlan {
                    action: Action::Post,
                    post: true,
                    signal: 0,
                    override_errno: 0,
                    rate_ns: 0,
                    rate_scope: RateLimitScope::Thread,
                },
            }],
            monitor: false,
            message: String::new(),
            tags: Vec::new(),
        }
    }

    fn binary(follow: bool) -> FilterPlan {
        FilterPlan::Binary {
            set: BinarySet {
                kind: BinaryMatch::Exact,
                values: vec!["/usr/bin/x".into()],
            },
            negate: false,
            follow,
        }
    }

    #[test]
    fn a_selectors_filters_are_placed_cheapest_first() {
        // openat_write.yaml: path Equal, then flags Mask; and a binary.
        let path = FilterPlan::ArgStr {
            arg: 1,
            negate: false,
            entries: vec![(b"/etc/passwd".to_vec(), true)],
        };
        let mask = FilterPlan::ArgMask { arg: 2, value: 67 };
        let mut layout = Layout::new();
        let mut change = BinsetChange::default();
        let placed = layout
            .place(&hook(vec![path, binary(false), mask]), &mut change)
            .expect("placed");
        let kinds: Vec<u8> = placed.filters.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [filt::ARG_MASK, filt::BINARY, filt::ARG_STR]);
        assert!(placed.filters.iter().all(|f| f.sel == 0));
    }

    #[test]
    fn a_failed_place_gives_its_binary_bits_back() {
        let mut layout = Layout::new();
        let mut change = BinsetChange::default();
        let a = layout
            .place(&hook(vec![binary(true)]), &mut change)
            .expect("a");
        assert_eq!(change.added.len(), 1);
        let too_long = FilterPlan::ArgStr {
            arg: 0,
            negate: false,
            entries: vec![(vec![b'x'; 300], true)],
        };
        let mut change = BinsetChange::default();
        assert!(layout
            .place(&hook(vec![binary(true), too_long]), &mut change)
            .is_err());
        assert_eq!(
            layout.binset_config(),
            ([1, 0], 1),
            "still followed by a only"
        );
        let mut change = BinsetChange::default();
        layout.release(&a, &mut change);
        assert_eq!(
            change.removed.len(),
            1,
            "the last user gone, the bit is freed"
        );
        assert_eq!(layout.binset_config(), ([0, 0], 0));
    }

    #[test]
    fn follow_counts_per_reference() {
        let mut layout = Layout::new();
        let mut change = BinsetChange::default();
        let both = layout
            .place(&hook(vec![binary(true), binary(false)]), &mut change)
            .expect("both");
        let other = layout
            .place(&hook(vec![binary(true)]), &mut change)
            .expect("other");
        layout.release(&both, &mut change);
        assert_eq!(
            layout.binset_config().0,
            [1, 0],
            "other still follows children"
        );
        layout.release(&other, &mut change);
        assert_eq!(layout.binset_config(), ([0, 0], 0));
    }

    #[test]
    fn socket_filters_place_their_sets() {
        let mut layout = Layout::new();
        let mut change = BinsetChange::default();
        let v4: std::net::IpAddr = "127.0.0.0".parse().expect("v4");
        let v6: std::net::IpAddr = "fd00::".parse().expect("v6");
        let placed = layout
            .place(
                &hook(vec![
                    FilterPlan::SockAddr {
                        arg: 1,
                        dst: false,
                        negate: true,
                        prefixes: vec![(v4, 8), (v6, 8)],
                    },
                    FilterPlan::SockPort {
                        arg: 1,
                        dst: true,
                        negate: false,
                        entries: vec![(443, 64)],
                    },
                    FilterPlan::SockPortPriv {
                        arg: 1,
                        dst: false,
                        negate: false,
                    },
                    FilterPlan::SockField {
                        arg: 1,
                        field: SockField::Family,
                        entries: vec![(2, 64)],
                    },
                ]),
                &mut change,
            )
            .expect("placed");
        let [addr, port, private, family] = &placed.filters[..] else {
            panic!("{:?}", placed.filters)
        };
        assert_eq!(
            (addr.kind, addr.aux, addr.flags),
            (filt::SOCK_ADDR, sockpart::SRC, rt::FILTF_INVERT),
            "Not-forms invert inside the filter"
        );
        let v6_set = u32::try_from(addr.value).expect("set id");
        assert_ne!(addr.set_id, v6_set);
        let sets: Vec<(u32, u32)> = placed
            .num
            .iter()
            .map(|k| (k.data().set_id, k.prefix_len()))
            .collect();
        assert!(sets.contains(&(addr.set_id, 32 + 8)), "{sets:?}");
        assert!(sets.contains(&(v6_set, 32 + 8)), "{sets:?}");
        assert_eq!(
            (port.kind, port.aux, port.flags),
            (filt::SOCK_PORT, sockpart::DST, 0)
        );
        assert!(sets.contains(&(port.set_id, 32 + 64)));
        assert_eq!(private.kind, filt::SOCK_PRIV);
        assert_eq!(
            (family.kind, family.aux),
            (filt::SOCK_FIELD, sockpart::FAMILY)
        );
        assert_eq!(placed.num.len(), 4);
        layout.release(&placed, &mut change);
        assert_eq!(layout.filters.free, BTreeMap::from([(0, rt::MAX_FILTERS)]));
    }

    #[test]
    fn ranges_merge_on_release() {
        let mut r = Ranges::new("t", 10);
        let a = r.alloc(3).expect("a");
        let b = r.alloc(3).expect("b");
        let c = r.alloc(4).expect("c");
        assert_eq!((a, b, c), (0, 3, 6));
        assert!(r.alloc(1).is_err());
        r.release(b, 3);
        r.release(a, 3);
        assert_eq!(r.alloc(6).expect("merged"), 0);
        r.release(c, 4);
        r.release(0, 6);
        assert_eq!(r.free, BTreeMap::from([(0, 10)]));
    }
}
