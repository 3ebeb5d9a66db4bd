//! Semantic checks of a [`TracingPolicy`] (each error names the YAML path and
//! what would fix it) and the hook kinds and features it needs.

use std::collections::BTreeSet;

use crate::model::{
    ActionKind, ActionSelector, ArgClass, ArgSelector, KProbeArg, ListType, NamespaceKind,
    Selector, TracingPolicy,
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

/// A rule broken at YAML path `path`; `reason` says what to change.
pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A recognised but unimplemented `feature` ("kretprobes are") at YAML path
/// `path`; `hint` (starting with `: ` or a space) says how to do without it.
pub(crate) fn unsupported(
    path: impl Into<String>,
    feature: impl Into<String>,
    hint: impl Into<String>,
) -> ValidationError {
    ValidationError::Unsupported {
        path: path.into(),
        feature: feature.into(),
        hint: hint.into(),
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
        return Err(unsupported(
            "spec.uprobes",
            "uprobes are",
            ": palisade traces the kernel only; remove spec.uprobes",
        ));
    }
    if !spec.usdts.is_empty() {
        return Err(unsupported(
            "spec.usdts",
            "usdts are",
            ": palisade traces the kernel only; remove spec.usdts",
        ));
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
        cx.selectors(
            &p,
            &k.selectors,
            &k.args,
            k.return_arg.as_ref(),
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
        cx.selectors(&p, &t.selectors, &t.args, None, Hook::Tracepoint)?;
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
        cx.selectors(&p, &l.selectors, &l.args, None, Hook::Lsm)?;
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
        ret: Option<&KProbeArg>,
        hook: Hook,
    ) -> Result<(), ValidationError> {
        check_count(
            &format!("{p}.selectors"),
            sels.len(),
            MAX_SELECTORS,
            "selectors",
        )?;
        let shape = crate::eval::Hook {
            path: p,
            args,
            return_arg: ret,
            selectors: sels,
            tracepoint: hook == Hook::Tracepoint,
        };
        let lists = DeclaredLists(self.policy);
        for (i, s) in sels.iter().enumerate() {
            let sp = format!("{p}.selectors[{i}]");
            if (!s.match_return_args.is_empty() || !s.match_return_actions.is_empty())
                && hook != (Hook::Kprobe { has_return: true })
            {
                return Err(invalid(
                    format!("{sp}.matchReturnArgs"),
                    "matchReturnArgs/matchReturnActions need a kprobe with return: true and returnArg",
                ));
            }
            // The evaluator's compiler checks filters and values, so what
            // validates is exactly what evaluates.
            crate::eval::compile_selector(&sp, s, &shape, &lists)?;
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
                return Err(unsupported(
                    format!("{ap}.action"),
                    format!("action {:?} (removed from Tetragon) is", a.action),
                    ": use arg types file/path/fd, which resolve paths directly",
                ));
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

/// Parses every value of the `matchArgs` entry at YAML path `mp` with `f`;
/// an error names the failing value (`{mp}.values[k]`).
pub(crate) fn each_value<T>(
    mp: &str,
    m: &ArgSelector,
    mut f: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, ValidationError> {
    m.values
        .iter()
        .enumerate()
        .map(|(k, v)| f(v.as_str()).map_err(|e| invalid(format!("{mp}.values[{k}]"), e)))
        .collect()
}

/// Refuses an empty value list or one longer than [`MAX_VALUES`].
pub(crate) fn nonempty_capped(path: &str, n: usize) -> Result<(), ValidationError> {
    if n == 0 {
        return Err(invalid(path, "no values; add at least one"));
    }
    check_count(path, n, MAX_VALUES, "values")
}

/// Which declared argument a `matchArgs` (or `matchReturnArgs`) entry at
/// YAML path `mp` refers to: its position in `args` (`what` names the list
/// in errors).
///
/// - `args: [p, ...]` names positions in the spec's list (checked in
///   range); the first one is the filtered argument.
/// - Otherwise `index` names the declared arg with that `index` (the first
///   if several share it).
/// - On tracepoints, when no declared arg has that `index`, it is the
///   position in the list (Tetragon rewrites tracepoint indexes to
///   positions).
pub fn resolve_arg(
    mp: &str,
    m: &ArgSelector,
    args: &[KProbeArg],
    what: &str,
    tracepoint: bool,
) -> Result<usize, ValidationError> {
    if let Some(&first) = m.args.first() {
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
        return Ok(first as usize);
    }
    if let Some(pos) = args.iter().position(|a| a.index == m.index) {
        return Ok(pos);
    }
    if tracepoint && (m.index as usize) < args.len() {
        return Ok(m.index as usize);
    }
    let declared: Vec<String> = args.iter().map(|a| a.index.to_string()).collect();
    Err(invalid(
        format!("{mp}.index"),
        format!(
            "index {} does not refer to a declared {what} (declared indexes: [{}]); declare it or fix the index",
            m.index,
            declared.join(", ")
        ),
    ))
}

/// Lists as validation sees them: declared or not.
struct DeclaredLists<'a>(&'a TracingPolicy);

impl crate::eval::ListSource for DeclaredLists<'_> {
    fn integers(&self, name: &str) -> Result<Vec<u64>, String> {
        if self.0.spec.lists.iter().any(|l| l.name == name) {
            Ok(Vec::new())
        } else {
            Err(format!(
                "list {name:?} is not declared; add it to spec.lists"
            ))
        }
    }
}

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

    #[test]
    fn rate_limits() {
        assert_eq!(parse_rate_limit("1m"), Ok(60_000));
        assert_eq!(parse_rate_limit("30"), Ok(30_000));
        assert_eq!(parse_rate_limit("2h"), Ok(7_200_000));
        assert!(parse_rate_limit("m").is_err());
        assert!(parse_rate_limit("0s").is_err());
    }
}
