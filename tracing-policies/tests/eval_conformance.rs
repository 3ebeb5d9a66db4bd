//! Compiles the selectors of every hook of every policy of the shared
//! Tetragon corpus that loads: the evaluator accepts everything validation
//! accepts, and its errors name the file and the YAML path.
#![allow(clippy::expect_used)]

mod common;

use palisade_tracing_policies::{hooks, parse_documents, CompiledSelectors, ResolvedLists};

/// x86_64 numbers of the syscalls the corpus lists (`__ia32_` names get
/// the i386 number with bit 31 set, as Tetragon's syscall64 does).
fn syscall(name: &str) -> Option<u64> {
    let (compat, base) = match name.strip_prefix("__ia32_") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("__x64_").unwrap_or(name)),
    };
    let n = match (compat, base.strip_prefix("sys_").unwrap_or(base)) {
        (false, "dup") => 32,
        (false, "dup2") => 33,
        (false, "dup3") => 292,
        (true, "dup") => 41 | 1 << 31,
        (true, "dup2") => 63 | 1 << 31,
        _ => return None,
    };
    Some(n)
}

#[test]
fn every_hook_of_every_loadable_policy_compiles() {
    let Some(files) = common::corpus("every_hook_of_every_loadable_policy_compiles") else {
        return;
    };
    let (mut policies, mut compiled) = (0, 0);
    for (name, text) in &files {
        let Ok(docs) = parse_documents(text, name) else {
            continue;
        };
        for policy in &docs {
            policies += 1;
            let lists = ResolvedLists::from_policy(policy, &syscall)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", e.path()));
            for hook in hooks(policy) {
                let c = CompiledSelectors::new(&hook.hook(), &lists)
                    .unwrap_or_else(|e| panic!("{name}: {}: {e}", e.path()));
                assert_eq!(c.len(), hook.selectors.len(), "{name}: {}", hook.path);
                compiled += 1;
            }
        }
    }
    println!("compiled {compiled} hooks of {policies} policies");
    assert!(
        policies >= 60,
        "only {policies} policies loaded from {}",
        common::corpus_dir().display()
    );
}

#[test]
fn corpus_lsm_policies_evaluate_as_documented() {
    use palisade_tracing_policies::{ActionKind, ArgValue, Context, PathCoverage, Process};
    let dir = common::corpus_dir();
    let load = |f: &str| {
        let text = std::fs::read_to_string(dir.join(f)).ok()?;
        parse_documents(&text, f).ok()?.into_iter().next()
    };
    let (Some(open), Some(bprm)) = (load("lsm_file_open.yaml"), load("lsm_bprm_check.yaml")) else {
        common::skipped(
            "corpus_lsm_policies_evaluate_as_documented",
            &format!(
                "no lsm_file_open.yaml and lsm_bprm_check.yaml in {}",
                dir.display()
            ),
        );
        return;
    };
    let cx = |binary: &str, path: &str| Context {
        args: vec![ArgValue::File {
            path: path.as_bytes().to_vec(),
            mode: 0o100644,
        }],
        process: Process {
            pid: 42,
            binary: binary.as_bytes().to_vec(),
            ..Process::default()
        },
        ..Context::default()
    };
    let lists = ResolvedLists::new();
    let h = &hooks(&open)[0];
    let c = CompiledSelectors::new(&h.hook(), &lists).expect("file_open");
    let m = c
        .evaluate(&cx("/usr/bin/cat", "/etc/shadow"))
        .expect("match");
    assert!(m.has(ActionKind::Post) && !m.has(ActionKind::Override));
    assert!(c.evaluate(&cx("/usr/bin/less", "/etc/shadow")).is_none());
    assert!(c.evaluate(&cx("/usr/bin/cat", "/etc/hosts")).is_none());
    assert_eq!(
        c.path_coverage(0),
        PathCoverage::Paths {
            exact: [b"/etc/passwd".to_vec(), b"/etc/shadow".to_vec()].into(),
            prefixes: Default::default(),
        },
        "the two files it posts on"
    );

    let h = &hooks(&bprm)[0];
    let c = CompiledSelectors::new(&h.hook(), &lists).expect("bprm_check");
    let m = c
        .evaluate(&cx("/usr/bin/bash", "/src/contrib/tester-progs/nop"))
        .expect("match");
    assert_eq!(m.override_error(), Some(-1));
    assert!(c
        .evaluate(&cx("/usr/bin/sh", "/src/contrib/tester-progs/nop"))
        .is_none());
    assert_eq!(c.path_coverage(0), PathCoverage::Everything, "Postfix");
}
