//! Semantic checks of a [`TracingPolicy`] (each error names the YAML path and
//! what would fix it) and the hook kinds and features it needs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::model::{
    ActionKind, ActionSelector, ArgClass, ArgOperator, ArgSelector, CapabilitiesSelector,
    KProbeArg, ListType, NamespaceKind, Selector, TracingPolicy,
};

/// Most values one filter may list (palisade stores values in maps; this is
/// a sanity cap, not Tetragon's limit of 4 or so).
pub const MAX_VALUES: usize = 1024;
/// Most selectors one hook may have.
pub const MAX_SELECTORS: usize = 64;
/// Most tags one hook may have (Tetragon's limit).
pub const MAX_TAGS: usize = 16;
/// Longest `message` (Tetragon's limit).
pub const MAX_MESSAGE: usize = 256;

/// Why a well-formed tracing policy is not acceptable.
pub type ValidationError = palisade_k8s_yaml::SpecError;

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Hook kinds and features a policy needs from the kernel and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// kprobes on kernel functions.
    Kprobe,
    /// kprobes on syscall entry points (arch-specific symbol names).
    SyscallKprobe,
    /// kretprobes (`return: true`, `returnCopy`, `matchReturnArgs`).
    Kretprobe,
    /// Multi-attach kprobes (`call: list:NAME`); fentry/kprobe.multi when
    /// available, one kprobe per function otherwise.
    KprobeMulti,
    /// Tracepoints.
    Tracepoint,
    /// Raw tracepoints.
    RawTracepoint,
    /// BPF LSM hooks (`lsm=...,bpf`).
    Lsm,
    /// uprobes (refused by palisade).
    Uprobe,
    /// USDTs (refused by palisade).
    Usdt,
    /// Return-value override (`bpf_override_return` or LSM return).
    Override,
    /// Sending signals (`Sigkill`, `Signal`).
    Signal,
    /// Syscall enforcers (`spec.enforcers`, `NotifyEnforcer`).
    Enforcer,
    /// Stack traces in events.
    StackTrace,
    /// IMA file hashes in events.
    ImaHash,
    /// Socket tracking (`TrackSock`/`UntrackSock`).
    SockTracking,
    /// Outbound `GetUrl`/`DnsLookup` actions.
    ExternalAction,
    /// Loader events (`loader: true`).
    Loader,
    /// Pod or container selectors (needs the pod/cgroup mapping).
    WorkloadSelector,
}

/// Everything `policy` needs, sorted and without duplicates.
pub fn requirements(policy: &TracingPolicy) -> Vec<Requirement> {
    let spec = &policy.spec;
    let mut r = BTreeSet::new();
    let sel = |r: &mut BTreeSet<Requirement>, s: &Selector| {
        if !s.match_return_args.is_empty() || !s.match_return_actions.is_empty() {
            r.insert(Requirement::Kretprobe);
        }
        for a in s.match_actions.iter().chain(&s.match_return_actions) {
            if let Some(x) = action_requirement(a) {
                r.insert(x);
            }
            if a.kernel_stack_trace || a.user_stack_trace {
                r.insert(Requirement::StackTrace);
            }
            if a.ima_hash {
                r.insert(Requirement::ImaHash);
            }
        }
    };
    for k in &spec.kprobes {
        r.insert(Requirement::Kprobe);
        if k.syscall {
            r.insert(Requirement::SyscallKprobe);
        }
        if k.call.starts_with("list:") {
            r.insert(Requirement::KprobeMulti);
        }
        if k.r#return || k.args.iter().any(|a| a.return_copy) {
            r.insert(Requirement::Kretprobe);
        }
        if matches!(
            k.return_arg_action,
            Some(ActionKind::TrackSock | ActionKind::UntrackSock)
        ) {
            r.insert(Requirement::SockTracking);
        }
        k.selectors.iter().for_each(|s| sel(&mut r, s));
    }
    for t in &spec.tracepoints {
        r.insert(if t.raw {
            Requirement::RawTracepoint
        } else {
            Requirement::Tracepoint
        });
        t.selectors.iter().for_each(|s| sel(&mut r, s));
    }
    for l in &spec.lsm_hooks {
        r.insert(Requirement::Lsm);
        l.selectors.iter().for_each(|s| sel(&mut r, s));
    }
    for u in &spec.uprobes {
        r.insert(Requirement::Uprobe);
        u.selectors.iter().for_each(|s| sel(&mut r, s));
    }
    for u in &spec.usdts {
        r.insert(Requirement::Usdt);
        u.selectors.iter().for_each(|s| sel(&mut r, s));
    }
    if !spec.enforcers.is_empty() {
        r.insert(Requirement::Enforcer);
    }
    if spec.loader {
        r.insert(Requirement::Loader);
    }
    if spec.pod_selector.is_some() || spec.container_selector.is_some() {
        r.insert(Requirement::WorkloadSelector);
    }
    r.into_iter().collect()
}

fn action_requirement(a: &ActionSelector) -> Option<Requirement> {
    Some(match a.action {
        ActionKind::Override => Requirement::Override,
        ActionKind::Sigkill | ActionKind::Signal => Requirement::Signal,
        ActionKind::NotifyEnforcer | ActionKind::CleanupEnforcerNotification => {
            Requirement::Enforcer
        }
        ActionKind::TrackSock | ActionKind::UntrackSock => Requirement::SockTracking,
        ActionKind::GetUrl | ActionKind::DnsLookup => Requirement::ExternalAction,
        _ => return None,
    })
}

/// The policy mode (`options: [{name: policy-mode, value: ...}]`).
///
/// In `monitor` mode the enforcement actions (`Sigkill`, `Signal`,
/// `Override`, `NotifyEnforcer`) are not carried out; their events are
/// still posted. The mode can be switched at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PolicyMode {
    /// Actions are carried out (default).
    #[default]
    Enforce,
    /// Actions are only reported.
    Monitor,
}

/// The policy's mode, from its options (default [`PolicyMode::Enforce`]).
pub fn policy_mode(policy: &TracingPolicy) -> Result<PolicyMode, ValidationError> {
    let mut mode = PolicyMode::Enforce;
    for (i, o) in policy.spec.options.iter().enumerate() {
        if o.name == "policy-mode" {
            mode = match o.value.as_str() {
                "enforce" => PolicyMode::Enforce,
                "monitor" => PolicyMode::Monitor,
                v => {
                    return Err(invalid(
                        format!("spec.options[{i}].value"),
                        format!("invalid policy-mode {v:?}; use \"enforce\" or \"monitor\""),
                    ))
                }
            };
        }
    }
    Ok(mode)
}

/// Which hook a selector list belongs to (what it allows).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Kprobe { has_return: bool },
    Tracepoint,
    Lsm,
}

struct Ctx<'a> {
    policy: &'a TracingPolicy,
}

/// Checks everything palisade checks before compiling: unsupported hooks
/// (uprobes, USDTs), arg declarations, selectors, values, list references,
/// actions and options. Returns the first problem.
pub fn validate(policy: &TracingPolicy) -> Result<(), ValidationError> {
    if policy.api_version != "cilium.io/v1alpha1" {
        return Err(invalid(
            "apiVersion",
            format!(
                "unsupported apiVersion {:?}; use cilium.io/v1alpha1",
                policy.api_version
            ),
        ));
    }
    let spec = &policy.spec;
    if !spec.uprobes.is_empty() {
        return Err(ValidationError::Unsupported {
            path: "spec.uprobes".into(),
            feature: "uprobes are".into(),
            hint: ": palisade traces the kernel only; remove spec.uprobes".into(),
        });
    }
    if !spec.usdts.is_empty() {
        return Err(ValidationError::Unsupported {
            path: "spec.usdts".into(),
            feature: "usdts are".into(),
            hint: ": palisade traces the kernel only; remove spec.usdts".into(),
        });
    }
    if policy.metadata.name.is_empty() {
        return Err(invalid(
            "metadata.name",
            "metadata.name is empty; name the policy",
        ));
    }
    if spec.kprobes.is_empty()
        && spec.tracepoints.is_empty()
        && spec.lsm_hooks.is_empty()
        && !spec.loader
    {
        return Err(invalid(
            "spec",
            "the policy has no hooks; add kprobes, tracepoints or lsmhooks",
        ));
    }
    policy_mode(policy)?;
    let cx = Ctx { policy };
    cx.lists()?;
    for (i, e) in spec.enforcers.iter().enumerate() {
        if e.calls.is_empty() {
            return Err(invalid(
                format!("spec.enforcers[{i}].calls"),
                "an enforcer needs at least one call",
            ));
        }
        for (j, c) in e.calls.iter().enumerate() {
            cx.list_ref(&format!("spec.enforcers[{i}].calls[{j}]"), c)?;
        }
    }
    for (i, k) in spec.kprobes.iter().enumerate() {
        let p = format!("spec.kprobes[{i}]");
        if k.call.is_empty() {
            return Err(invalid(
                format!("{p}.call"),
                "call is empty; name a kernel function or list:NAME",
            ));
        }
        cx.list_ref(&format!("{p}.call"), &k.call)?;
        common(&p, &k.message, &k.tags)?;
        cx.args(&p, &k.args, true)?;
        if k.r#return && k.return_arg.is_none() {
            return Err(invalid(
                format!("{p}.returnArg"),
                "return: true needs returnArg; add returnArg (e.g. {index: 0, type: int})",
            ));
        }
        if let Some(ra) = &k.return_arg {
            // Without `return: true` Tetragon ignores returnArg; so do we.
            cx.args(&format!("{p}.returnArg"), std::slice::from_ref(ra), false)?;
        }
        if let Some(a) = k.return_arg_action {
            if !matches!(
                a,
                ActionKind::Post | ActionKind::TrackSock | ActionKind::UntrackSock
            ) {
                return Err(invalid(
                    format!("{p}.returnArgAction"),
                    format!("returnArgAction {a:?} is not allowed; use TrackSock or UntrackSock"),
                ));
            }
            if !k.r#return {
                return Err(invalid(
                    format!("{p}.returnArgAction"),
                    "returnArgAction needs return: true",
                ));
            }
        }
        let ret: Vec<KProbeArg> = k.return_arg.iter().cloned().collect();
        cx.selectors(
            &p,
            &k.selectors,
            &k.args,
            &ret,
            Hook::Kprobe {
                has_return: k.r#return,
            },
        )?;
    }
    for (i, t) in spec.tracepoints.iter().enumerate() {
        let p = format!("spec.tracepoints[{i}]");
        if t.subsystem.is_empty() || t.event.is_empty() {
            return Err(invalid(p, "a tracepoint needs subsystem and event"));
        }
        common(&p, &t.message, &t.tags)?;
        cx.args(&p, &t.args, false)?;
        cx.selectors(&p, &t.selectors, &t.args, &[], Hook::Tracepoint)?;
    }
    for (i, l) in spec.lsm_hooks.iter().enumerate() {
        let p = format!("spec.lsmhooks[{i}]");
        if l.hook.is_empty() {
            return Err(invalid(
                format!("{p}.hook"),
                "hook is empty; name an LSM hook (e.g. file_open)",
            ));
        }
        common(&p, &l.message, &l.tags)?;
        cx.args(&p, &l.args, false)?;
        cx.selectors(&p, &l.selectors, &l.args, &[], Hook::Lsm)?;
    }
    Ok(())
}

fn common(p: &str, message: &str, tags: &[String]) -> Result<(), ValidationError> {
    if message.chars().count() > MAX_MESSAGE {
        return Err(invalid(
            format!("{p}.message"),
            format!("message is longer than {MAX_MESSAGE} characters; shorten it"),
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            format!("{p}.tags"),
            format!(
                "{} tags, at most {MAX_TAGS} allowed; remove some",
                tags.len()
            ),
        ));
    }
    Ok(())
}

fn check_count(path: &str, n: usize, max: usize, what: &str) -> Result<(), ValidationError> {
    if n > max {
        return Err(invalid(
            path,
            format!("{n} {what}, at most {max} allowed; split the policy or use a list"),
        ));
    }
    Ok(())
}

impl Ctx<'_> {
    fn lists(&self) -> Result<(), ValidationError> {
        let mut names = BTreeSet::new();
        for (i, l) in self.policy.spec.lists.iter().enumerate() {
            let p = format!("spec.lists[{i}]");
            if l.name.is_empty() {
                return Err(invalid(format!("{p}.name"), "list name is empty"));
            }
            if !names.insert(l.name.as_str()) {
                return Err(invalid(
                    format!("{p}.name"),
                    format!("duplicate list name {:?}; rename one", l.name),
                ));
            }
            check_count(&format!("{p}.values"), l.values.len(), MAX_VALUES, "values")?;
            match l.r#type {
                Some(ListType::Syscalls) | None if l.values.is_empty() => {
                    return Err(invalid(
                        format!("{p}.values"),
                        "the list has no values; add some",
                    ));
                }
                Some(ListType::GeneratedSyscalls) if !l.values.is_empty() => {
                    return Err(invalid(
                        format!("{p}.values"),
                        "a generated_syscalls list is generated by the agent; remove values",
                    ));
                }
                Some(ListType::GeneratedFtrace) => {
                    if !l.values.is_empty() {
                        return Err(invalid(
                            format!("{p}.values"),
                            "a generated_ftrace list is generated from pattern; remove values",
                        ));
                    }
                    if l.pattern.as_deref().unwrap_or("").is_empty() {
                        return Err(invalid(
                            format!("{p}.pattern"),
                            "a generated_ftrace list needs a pattern (regular expression)",
                        ));
                    }
                }
                _ => {}
            }
            if l.pattern.is_some() && l.r#type != Some(ListType::GeneratedFtrace) {
                return Err(invalid(
                    format!("{p}.pattern"),
                    "pattern is only for type: generated_ftrace; remove it",
                ));
            }
        }
        Ok(())
    }

    fn list_ref(&self, path: &str, value: &str) -> Result<(), ValidationError> {
        if let Some(name) = value.strip_prefix("list:") {
            if !self.policy.spec.lists.iter().any(|l| l.name == name) {
                return Err(invalid(
                    path,
                    format!("list {name:?} is not declared; add it to spec.lists"),
                ));
            }
        }
        Ok(())
    }

    fn args(&self, p: &str, args: &[KProbeArg], kprobe: bool) -> Result<(), ValidationError> {
        let one = args.len() == 1 && p.ends_with("returnArg");
        for (j, a) in args.iter().enumerate() {
            let ap = if one {
                p.to_owned()
            } else {
                format!("{p}.args[{j}]")
            };
            let buf = matches!(
                a.r#type,
                crate::model::ArgType::CharBuf | crate::model::ArgType::CharIovec
            );
            if a.size_arg_index != 0 && !buf {
                return Err(invalid(
                    format!("{ap}.sizeArgIndex"),
                    "sizeArgIndex only applies to char_buf and char_iovec; remove it",
                ));
            }
            if a.return_copy && !buf {
                return Err(invalid(
                    format!("{ap}.returnCopy"),
                    "returnCopy only applies to char_buf and char_iovec; remove it",
                ));
            }
            if a.return_copy && !kprobe {
                return Err(invalid(
                    format!("{ap}.returnCopy"),
                    "returnCopy needs a kprobe",
                ));
            }
            // maxData on other types is ignored, as in Tetragon.
            if !a.resolve.is_empty()
                && !a.resolve.split('.').all(|s| {
                    let s = s.split('[').next().unwrap_or("");
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            {
                return Err(invalid(
                    format!("{ap}.resolve"),
                    format!(
                        "resolve {:?} is not a field path like mm.owner.pid",
                        a.resolve
                    ),
                ));
            }
        }
        Ok(())
    }

    fn selectors(
        &self,
        p: &str,
        sels: &[Selector],
        args: &[KProbeArg],
        ret: &[KProbeArg],
        hook: Hook,
    ) -> Result<(), ValidationError> {
        check_count(
            &format!("{p}.selectors"),
            sels.len(),
            MAX_SELECTORS,
            "selectors",
        )?;
        for (i, s) in sels.iter().enumerate() {
            let sp = format!("{p}.selectors[{i}]");
            for (j, m) in s.match_args.iter().enumerate() {
                self.arg_selector(
                    &format!("{sp}.matchArgs[{j}]"),
                    m,
                    args,
                    "args",
                    hook == Hook::Tracepoint,
                )?;
            }
            if !s.match_return_args.is_empty() || !s.match_return_actions.is_empty() {
                if hook != (Hook::Kprobe { has_return: true }) {
                    return Err(invalid(
                        format!("{sp}.matchReturnArgs"),
                        "matchReturnArgs/matchReturnActions need a kprobe with return: true and returnArg",
                    ));
                }
                for (j, m) in s.match_return_args.iter().enumerate() {
                    self.arg_selector(
                        &format!("{sp}.matchReturnArgs[{j}]"),
                        m,
                        ret,
                        "returnArg",
                        false,
                    )?;
                }
            }
            for (j, m) in s.match_pids.iter().enumerate() {
                let mp = format!("{sp}.matchPIDs[{j}]");
                nonempty_capped(&format!("{mp}.values"), m.values.len())?;
            }
            for (name, list) in [
                ("matchBinaries", &s.match_binaries),
                ("matchParentBinaries", &s.match_parent_binaries),
            ] {
                for (j, m) in list.iter().enumerate() {
                    let vp = format!("{sp}.{name}[{j}].values");
                    nonempty_capped(&vp, m.values.len())?;
                    if let Some(k) = m.values.iter().position(String::is_empty) {
                        return Err(invalid(format!("{vp}[{k}]"), "empty binary path"));
                    }
                }
            }
            for (j, m) in s.match_namespaces.iter().enumerate() {
                let vp = format!("{sp}.matchNamespaces[{j}].values");
                nonempty_capped(&vp, m.values.len())?;
                for (k, v) in m.values.iter().enumerate() {
                    if v.as_str() != "host_ns" && v.as_str().parse::<u32>().is_err() {
                        return Err(invalid(
                            format!("{vp}[{k}]"),
                            format!("{v:?} is not a namespace inode number or host_ns"),
                        ));
                    }
                }
            }
            for (j, m) in s.match_namespace_changes.iter().enumerate() {
                nonempty_capped(
                    &format!("{sp}.matchNamespaceChanges[{j}].values"),
                    m.values.len(),
                )?;
            }
            for (name, list) in [
                ("matchCapabilities", &s.match_capabilities),
                ("matchCapabilityChanges", &s.match_capability_changes),
            ] {
                for (j, m) in list.iter().enumerate() {
                    caps(&format!("{sp}.{name}[{j}]"), m)?;
                }
            }
            for (name, list) in [
                ("matchActions", &s.match_actions),
                ("matchReturnActions", &s.match_return_actions),
            ] {
                for (j, a) in list.iter().enumerate() {
                    self.action(&format!("{sp}.{name}[{j}]"), a, args, hook)?;
                }
            }
        }
        Ok(())
    }

    fn arg_selector(
        &self,
        mp: &str,
        m: &ArgSelector,
        args: &[KProbeArg],
        what: &str,
        tracepoint: bool,
    ) -> Result<(), ValidationError> {
        use ArgOperator as O;
        if m.operator == O::CelExpr {
            return Err(ValidationError::Unsupported {
                path: format!("{mp}.operator"),
                feature: "the CelExpr operator is".into(),
                hint: ": use the typed operators (Equal, Prefix, GT, ...)".into(),
            });
        }
        let declared: Vec<String> = args.iter().map(|a| a.index.to_string()).collect();
        let arg = if let Some(&pos) = m.args.first() {
            for (k, &a) in m.args.iter().enumerate() {
                if a as usize >= args.len() {
                    return Err(invalid(
                        format!("{mp}.args[{k}]"),
                        format!(
                            "args[{k}] = {a} but only {} {what} are declared; use a position from 0 to {}",
                            args.len(),
                            args.len().saturating_sub(1)
                        ),
                    ));
                }
            }
            &args[pos as usize]
        } else {
            // Tracepoints: Tetragon also accepts the position in `args`
            // when no declared arg has this index.
            let by_pos = if tracepoint {
                args.get(m.index as usize)
            } else {
                None
            };
            match args.iter().find(|a| a.index == m.index).or(by_pos) {
                Some(a) => a,
                None => {
                    return Err(invalid(
                        format!("{mp}.index"),
                        format!(
                            "index {} does not refer to a declared {what} (declared indexes: [{}]); declare it or fix the index",
                            m.index,
                            declared.join(", ")
                        ),
                    ))
                }
            }
        };
        let ty = arg.r#type;
        let class = ty.class();
        let bad_op = || {
            invalid(
                format!("{mp}.operator"),
                format!(
                    "operator {:?} is not valid for an argument of type {}; {}",
                    m.operator,
                    ty.name(),
                    suggestion(class)
                ),
            )
        };
        let no_values = matches!(
            m.operator,
            O::SPortPriv | O::NotSPortPriv | O::DPortPriv | O::NotDPortPriv | O::CapabilitiesGained
        );
        let vp = format!("{mp}.values");
        if no_values {
            if !m.values.is_empty() {
                return Err(invalid(
                    vp,
                    format!("operator {:?} takes no values; remove them", m.operator),
                ));
            }
        } else {
            nonempty_capped(&vp, m.values.len())?;
        }
        let int = matches!(class, ArgClass::Signed(_) | ArgClass::Unsigned(_));
        let sock = matches!(class, ArgClass::Socket | ArgClass::SockAddr);
        let ok = match m.operator {
            O::Equal | O::NotEqual => {
                int || class == ArgClass::Text || class == ArgClass::SockAddrUn
            }
            O::Prefix | O::NotPrefix | O::Postfix | O::NotPostfix => {
                class == ArgClass::Text || class == ArgClass::SockAddrUn
            }
            O::SubString | O::SubStringIgnCase => class == ArgClass::Text,
            O::GreaterThan | O::LessThan | O::Mask | O::InRange | O::NotInRange => int,
            O::InMap | O::NotInMap => int,
            O::SPort | O::NotSPort | O::SPortPriv | O::NotSPortPriv | O::SAddr | O::NotSAddr => {
                sock
            }
            O::DPort | O::NotDPort | O::DPortPriv | O::NotDPortPriv | O::DAddr | O::NotDAddr => {
                class == ArgClass::Socket
            }
            O::Protocol | O::State => class == ArgClass::Socket,
            O::Family => sock || class == ArgClass::SockAddrUn,
            O::FileType | O::NotFileType => {
                matches!(
                    ty,
                    crate::model::ArgType::File | crate::model::ArgType::Path
                )
            }
            O::CapabilitiesGained => class == ArgClass::CapSet,
            O::CelExpr => false,
        };
        if !ok {
            return Err(bad_op());
        }
        if m.operator == O::CapabilitiesGained {
            if m.args.len() != 2 {
                return Err(invalid(
                    format!("{mp}.args"),
                    "CapabilitiesGained needs args: [new, old], two positions of capability-set args",
                ));
            }
            if args[m.args[1] as usize].r#type.class() != ArgClass::CapSet {
                return Err(invalid(
                    format!("{mp}.args[1]"),
                    "CapabilitiesGained compares two capability-set args",
                ));
            }
        }
        for (k, v) in m.values.iter().enumerate() {
            let v = v.as_str();
            let at = format!("{vp}[{k}]");
            let res: Result<(), String> = match m.operator {
                O::Equal | O::NotEqual | O::GreaterThan | O::LessThan | O::Mask if int => {
                    parse_int(v, class).map(|_| ())
                }
                O::InRange | O::NotInRange => parse_range(v, class),
                O::InMap | O::NotInMap => {
                    if v.starts_with("list:") {
                        self.list_ref(&at, v)?;
                        Ok(())
                    } else {
                        parse_range(v, class).or_else(|_| parse_int(v, class).map(|_| ()))
                    }
                }
                O::SPort | O::NotSPort | O::DPort | O::NotDPort => parse_port(v),
                O::SAddr | O::NotSAddr | O::DAddr | O::NotDAddr => parse_cidr(v),
                O::Protocol => named_or_int(v, "IPPROTO_", PROTOCOLS),
                O::Family => named_or_int(v, "AF_", FAMILIES),
                O::State => named_or_int(v, "TCP_", TCP_STATES),
                O::FileType | O::NotFileType => {
                    if FILE_TYPES.contains(&v) {
                        Ok(())
                    } else {
                        Err(format!(
                            "unknown file type {v:?}; use one of {}",
                            FILE_TYPES.join(", ")
                        ))
                    }
                }
                O::SubString | O::SubStringIgnCase if v.len() >= 100 => {
                    Err("substrings must be shorter than 100 bytes".into())
                }
                _ => Ok(()),
            };
            res.map_err(|reason| invalid(at, reason))?;
        }
        Ok(())
    }

    fn action(
        &self,
        ap: &str,
        a: &ActionSelector,
        args: &[KProbeArg],
        hook: Hook,
    ) -> Result<(), ValidationError> {
        use ActionKind as A;
        let post_only = a.rate_limit.is_some()
            || a.rate_limit_scope.is_some()
            || a.kernel_stack_trace
            || a.user_stack_trace
            || a.ima_hash;
        if post_only && a.action != A::Post {
            return Err(invalid(
                ap,
                "rateLimit, rateLimitScope, kernelStackTrace, userStackTrace and imaHash only apply to action: Post",
            ));
        }
        let need = |field: &str, present: bool| -> Result<(), ValidationError> {
            if present {
                Ok(())
            } else {
                Err(invalid(
                    format!("{ap}.{field}"),
                    format!("action {:?} needs {field}; add it", a.action),
                ))
            }
        };
        match a.action {
            A::Post => {
                if let Some(r) = &a.rate_limit {
                    parse_rate_limit(r).map_err(|e| invalid(format!("{ap}.rateLimit"), e))?;
                } else if a.rate_limit_scope.is_some() {
                    return Err(invalid(
                        format!("{ap}.rateLimitScope"),
                        "rateLimitScope needs rateLimit",
                    ));
                }
            }
            A::Override => {
                if hook == Hook::Tracepoint {
                    return Err(invalid(
                        format!("{ap}.action"),
                        "Override only works on kprobes and lsmhooks; use Sigkill, or NotifyEnforcer with spec.enforcers",
                    ));
                }
                need("argError", a.arg_error.is_some())?;
            }
            A::Signal => {
                need("argSig", a.arg_sig.is_some())?;
                check_signal(&format!("{ap}.argSig"), a.arg_sig)?;
            }
            A::GetUrl => need(
                "argUrl",
                a.arg_url.as_deref().is_some_and(|s| !s.is_empty()),
            )?,
            A::DnsLookup => need(
                "argFqdn",
                a.arg_fqdn.as_deref().is_some_and(|s| !s.is_empty()),
            )?,
            A::TrackSock | A::UntrackSock => {
                let idx = a.arg_sock.unwrap_or(0);
                match args.iter().find(|x| x.index == idx) {
                    Some(x) if x.r#type.class() == ArgClass::Socket => {}
                    _ => {
                        return Err(invalid(
                            format!("{ap}.argSock"),
                            format!("argSock {idx} must be the index of a declared sock arg"),
                        ))
                    }
                }
            }
            A::NotifyEnforcer => {
                if self.policy.spec.enforcers.is_empty() {
                    return Err(invalid(
                        format!("{ap}.action"),
                        "NotifyEnforcer needs spec.enforcers; add an enforcer for the syscalls",
                    ));
                }
                if a.arg_error.is_none() && a.arg_sig.is_none() {
                    return Err(invalid(ap, "NotifyEnforcer needs argError and/or argSig"));
                }
                check_signal(&format!("{ap}.argSig"), a.arg_sig)?;
            }
            A::Set => {
                return Err(invalid(
                    format!("{ap}.action"),
                    "the Set action applies to usdts only",
                ));
            }
            A::FollowFd | A::UnfollowFd | A::CopyFd => {
                return Err(ValidationError::Unsupported {
                    path: format!("{ap}.action"),
                    feature: format!("action {:?} (removed from Tetragon) is", a.action),
                    hint: ": use arg types file/path/fd, which resolve paths directly".into(),
                });
            }
            A::NoPost | A::Sigkill | A::CleanupEnforcerNotification => {}
        }
        Ok(())
    }
}

fn check_signal(path: &str, sig: Option<u32>) -> Result<(), ValidationError> {
    match sig {
        Some(s) if !(1..=64).contains(&s) => Err(invalid(
            path,
            format!("signal {s} is not a signal number; use 1..=64 (9 is SIGKILL)"),
        )),
        _ => Ok(()),
    }
}

fn nonempty_capped(path: &str, n: usize) -> Result<(), ValidationError> {
    if n == 0 {
        return Err(invalid(path, "no values; add at least one"));
    }
    check_count(path, n, MAX_VALUES, "values")
}

fn caps(p: &str, m: &CapabilitiesSelector) -> Result<(), ValidationError> {
    nonempty_capped(&format!("{p}.values"), m.values.len())?;
    for (k, v) in m.values.iter().enumerate() {
        if !CAPABILITIES.contains(&v.as_str()) {
            return Err(invalid(
                format!("{p}.values[{k}]"),
                format!("unknown capability {v:?}; use a CAP_* name such as CAP_SYS_ADMIN"),
            ));
        }
    }
    Ok(())
}

fn suggestion(class: ArgClass) -> &'static str {
    match class {
        ArgClass::Signed(_) | ArgClass::Unsigned(_) => {
            "integers take Equal, NotEqual, GT, LT, Mask, InRange, NotInRange, InMap, NotInMap"
        }
        ArgClass::Text => "strings and paths take Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, SubString",
        ArgClass::Socket => "sockets take SPort, DPort, SAddr, DAddr, Protocol, Family, State and their Not/Priv forms",
        ArgClass::SockAddr => "sockaddr takes SAddr, SPort, SPortPriv, Family and their Not forms",
        ArgClass::SockAddrUn => "sockaddr_un takes Family, Equal, NotEqual, Prefix, NotPrefix",
        ArgClass::CapSet => "capability sets take CapabilitiesGained",
        ArgClass::Opaque => "this type is reported only and cannot be filtered",
    }
}

pub(crate) fn parse_int(v: &str, class: ArgClass) -> Result<i128, String> {
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let parsed = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(h, 16)
    } else if let Some(o) = body.strip_prefix("0o") {
        i128::from_str_radix(o, 8)
    } else {
        body.parse::<i128>()
    };
    let n = parsed.map_err(|_| format!("{v:?} is not an integer"))?;
    let n = if neg { -n } else { n };
    let (lo, hi) = match class {
        ArgClass::Signed(b) => (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1),
        ArgClass::Unsigned(b) => (0, (1i128 << b) - 1),
        _ => (i128::MIN, i128::MAX),
    };
    // Tetragon accepts the bit pattern of a negative value for unsigned
    // types too (e.g. -1 for 0xffffffff); allow the signed range as well.
    let lo = if let ArgClass::Unsigned(b) = class {
        -(1i128 << (b - 1))
    } else {
        lo
    };
    if n < lo || n > hi {
        return Err(format!(
            "{v} is out of range for the argument's type ({lo}..={hi})"
        ));
    }
    Ok(n)
}

fn parse_range(v: &str, class: ArgClass) -> Result<(), String> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| format!("{v:?} is not a range; write LOW:HIGH"))?;
    let (a, b) = (parse_int(a, class)?, parse_int(b, class)?);
    if a > b {
        return Err(format!(
            "range {v:?} is empty; write LOW:HIGH with LOW <= HIGH"
        ));
    }
    Ok(())
}

fn parse_port(v: &str) -> Result<(), String> {
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("{s:?} is not a port (0..=65535)"))
    };
    match v.split_once(':') {
        Some((a, b)) => {
            if port(a)? > port(b)? {
                return Err(format!("port range {v:?} is empty"));
            }
            Ok(())
        }
        None => port(v).map(|_| ()),
    }
}

fn parse_cidr(v: &str) -> Result<(), String> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{v:?} is not an IP address or CIDR (10.0.0.0/8, fd00::/8)"))?;
    if let Some(l) = len {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match l.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{v:?} has an invalid prefix length; use 0..={max}")),
        }
    }
    Ok(())
}

fn named_or_int(v: &str, prefix: &str, names: &[&str]) -> Result<(), String> {
    if v.parse::<u32>().is_ok() || names.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a number or a known {prefix}* name ({})",
            names.join(", ")
        ))
    }
}

const PROTOCOLS: &[&str] = &[
    "IPPROTO_IP",
    "IPPROTO_ICMP",
    "IPPROTO_IGMP",
    "IPPROTO_IPIP",
    "IPPROTO_TCP",
    "IPPROTO_EGP",
    "IPPROTO_PUP",
    "IPPROTO_UDP",
    "IPPROTO_IDP",
    "IPPROTO_TP",
    "IPPROTO_DCCP",
    "IPPROTO_IPV6",
    "IPPROTO_RSVP",
    "IPPROTO_GRE",
    "IPPROTO_ESP",
    "IPPROTO_AH",
    "IPPROTO_ICMPV6",
    "IPPROTO_MTP",
    "IPPROTO_BEETPH",
    "IPPROTO_ENCAP",
    "IPPROTO_PIM",
    "IPPROTO_COMP",
    "IPPROTO_L2TP",
    "IPPROTO_SCTP",
    "IPPROTO_UDPLITE",
    "IPPROTO_MPLS",
    "IPPROTO_ETHERNET",
    "IPPROTO_RAW",
    "IPPROTO_MPTCP",
];

const FAMILIES: &[&str] = &[
    "AF_UNSPEC",
    "AF_UNIX",
    "AF_LOCAL",
    "AF_INET",
    "AF_AX25",
    "AF_IPX",
    "AF_APPLETALK",
    "AF_NETROM",
    "AF_BRIDGE",
    "AF_ATMPVC",
    "AF_X25",
    "AF_INET6",
    "AF_ROSE",
    "AF_DECnet",
    "AF_NETBEUI",
    "AF_SECURITY",
    "AF_KEY",
    "AF_NETLINK",
    "AF_ROUTE",
    "AF_PACKET",
    "AF_ASH",
    "AF_ECONET",
    "AF_ATMSVC",
    "AF_RDS",
    "AF_SNA",
    "AF_IRDA",
    "AF_PPPOX",
    "AF_WANPIPE",
    "AF_LLC",
    "AF_IB",
    "AF_MPLS",
    "AF_CAN",
    "AF_TIPC",
    "AF_BLUETOOTH",
    "AF_IUCV",
    "AF_RXRPC",
    "AF_ISDN",
    "AF_PHONET",
    "AF_IEEE802154",
    "AF_CAIF",
    "AF_ALG",
    "AF_NFC",
    "AF_VSOCK",
    "AF_KCM",
    "AF_QIPCRTR",
    "AF_SMC",
    "AF_XDP",
    "AF_MCTP",
];

const TCP_STATES: &[&str] = &[
    "TCP_ESTABLISHED",
    "TCP_SYN_SENT",
    "TCP_SYN_RECV",
    "TCP_FIN_WAIT1",
    "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT",
    "TCP_CLOSE",
    "TCP_CLOSE_WAIT",
    "TCP_LAST_ACK",
    "TCP_LISTEN",
    "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
];

const FILE_TYPES: &[&str] = &[
    "sock", "socket", "lnk", "link", "reg", "regular", "blk", "block", "dir", "chr", "char",
    "fifo", "pipe",
];

/// Linux capability names, in number order (`CAP_CHOWN` is 0).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Parses a `rateLimit` (`N`, `Ns`, `Nm`, `Nh`) into milliseconds.
pub fn parse_rate_limit(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b's' | b'S') => (&s[..s.len() - 1], 1_000u64),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 60_000),
        Some(b'h' | b'H') => (&s[..s.len() - 1], 3_600_000),
        _ => (s, 1_000),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&ms| ms > 0 && ms <= u64::from(u32::MAX))
        .ok_or_else(|| format!("rateLimit {s:?} is not a duration like 30s, 5m or 1h"))
}

/// The namespace kinds, for documentation and error messages.
pub const NAMESPACE_KINDS: &[NamespaceKind] = &[
    NamespaceKind::Uts,
    NamespaceKind::Ipc,
    NamespaceKind::Mnt,
    NamespaceKind::Pid,
    NamespaceKind::PidForChildren,
    NamespaceKind::Net,
    NamespaceKind::Time,
    NamespaceKind::TimeForChildren,
    NamespaceKind::Cgroup,
    NamespaceKind::User,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ArgClass;

    #[test]
    fn ints_respect_the_type() {
        assert!(parse_int("255", ArgClass::Unsigned(8)).is_ok());
        assert!(parse_int("256", ArgClass::Unsigned(8)).is_err());
        assert!(parse_int("-1", ArgClass::Signed(32)).is_ok());
        assert_eq!(parse_int("0x10", ArgClass::Unsigned(32)), Ok(16));
        assert!(parse_int("ten", ArgClass::Signed(32)).is_err());
        assert!(parse_range("1:5", ArgClass::Signed(32)).is_ok());
        assert!(parse_range("5:1", ArgClass::Signed(32)).is_err());
    }

    #[test]
    fn ports_cidrs_names() {
        assert!(parse_port("53").is_ok());
        assert!(parse_port("1024:65535").is_ok());
        assert!(parse_port("70000").is_err());
        assert!(parse_cidr("127.0.0.1").is_ok());
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("fd00::/8").is_ok());
        assert!(parse_cidr("10.0.0.0/40").is_err());
        assert!(named_or_int("IPPROTO_TCP", "IPPROTO_", PROTOCOLS).is_ok());
        assert!(named_or_int("6", "IPPROTO_", PROTOCOLS).is_ok());
        assert!(named_or_int("TCP", "IPPROTO_", PROTOCOLS).is_err());
        assert_eq!(CAPABILITIES.len(), 41);
    }

    #[test]
    fn rate_limits() {
        assert_eq!(parse_rate_limit("1m"), Ok(60_000));
        assert_eq!(parse_rate_limit("30"), Ok(30_000));
        assert_eq!(parse_rate_limit("2h"), Ok(7_200_000));
        assert!(parse_rate_limit("m").is_err());
        assert!(parse_rate_limit("0s").is_err());
    }
}
