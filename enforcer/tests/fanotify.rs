//! The fanotify permission guard on the real kernel (needs root): opens and
//! execs of marked files are denied for the binaries the decider names,
//! everything else goes through, and nothing is left after the guard.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use palisade_enforcer::fanotify::{
    Access, AccessKind, Decider, Decision, FanotifyGuard, GuardConfig, Kinds, MarkPlan, Verdict,
};

/// A temporary directory removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("palisade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tests count this process's fanotify groups: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The serial lock, for a test that needs root (fanotify permission
/// events); `None`, saying so, when not root.
fn serial_as_root() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: fanotify permission events need root (CAP_SYS_ADMIN)");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(PoisonError::into_inner))
}

fn copy_exe(from: &str, to: &Path) {
    std::fs::copy(from, to).expect("copy binary");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Denies opens of `protected` paths by `binary`, and execs of `no_exec`.
struct TestDecider {
    binary: PathBuf,
    protected: Vec<PathBuf>,
    prefix: PathBuf,
    no_exec: PathBuf,
    seen: Mutex<Vec<Access>>,
}

impl Decider for TestDecider {
    type Event = String;

    fn decide(&self, access: &Access) -> Decision<String> {
        self.seen.lock().unwrap().push(access.clone());
        let exe = std::fs::read_link(format!("/proc/{}/exe", access.pid)).unwrap_or_default();
        let deny = match access.kind {
            AccessKind::Open => {
                exe == self.binary
                    && (self.protected.contains(&access.path)
                        || access.path.starts_with(&self.prefix))
            }
            AccessKind::Exec => access.path == self.no_exec,
        };
        if deny {
            Decision {
                verdict: Verdict::Deny,
                event: Some(format!(
                    "{} denied for {}",
                    access.path.display(),
                    exe.display()
                )),
            }
        } else {
            Decision::allow()
        }
    }
}

fn run(bin: &Path, file: &Path) -> (u32, Output) {
    let child = Command::new(bin)
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    (pid, child.wait_with_output().expect("wait"))
}

fn reads(bin: &Path, file: &Path, content: &str) -> bool {
    let (_, out) = run(bin, file);
    out.status.success() && String::from_utf8_lossy(&out.stdout) == content
}

fn denied(bin: &Path, file: &Path) -> bool {
    let (_, out) = run(bin, file);
    !out.status.success()
        && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted")
}

fn fanotify_groups() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("fanotify"))
        .count()
}

#[test]
fn guard_denies_what_the_decider_denies_and_leaves_nothing() {
    let Some(_serial) = serial_as_root() else {
        return;
    };
    let dir = TempDir::new("fanotify");
    let d = &dir.0;
    let cat = d.join("mycat");
    copy_exe("/bin/cat", &cat);
    let no_exec = d.join("blocked-true");
    copy_exe("/bin/true", &no_exec);
    let protected = d.join("protected");
    std::fs::write(&protected, "secret").expect("write");
    let open = d.join("open");
    std::fs::write(&open, "public").expect("write");
    // In its own directory: the directory's mark reports all its files.
    std::fs::create_dir(d.join("pending")).expect("mkdir");
    let later = d.join("pending/created-later");
    let sub = d.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("x"), "under prefix").expect("write");

    let decider = Arc::new(TestDecider {
        binary: cat.clone(),
        protected: vec![protected.clone(), later.clone()],
        prefix: sub.clone(),
        no_exec: no_exec.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let groups_before = fanotify_groups();
    let (guard, events) =
        FanotifyGuard::start(decider.clone(), GuardConfig::default()).expect("start");
    assert_eq!(fanotify_groups(), groups_before + 1);

    let mut plan = MarkPlan::new();
    plan.exact(&protected, Kinds::OPEN)
        .exact(&later, Kinds::OPEN)
        .exact(&no_exec, Kinds::EXEC);
    let report = guard.set_marks(&plan).expect("marks");
    assert_eq!(
        (report.files, report.directories, report.filesystems),
        (2, 1, 0)
    );

    // The named binary is denied, another binary reads, the unmarked file
    // is readable by everyone.
    let (pid, out) = run(&cat, &protected);
    assert!(!out.status.success(), "mycat read the protected file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(reads(Path::new("/bin/cat"), &protected, "secret"));
    assert!(reads(&cat, &open, "public"));
    {
        let seen = decider.seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|a| a.pid == pid && a.path == protected && a.kind == AccessKind::Open),
            "decider did not see pid {pid} open {}: {seen:?}",
            protected.display()
        );
        assert!(
            !seen.iter().any(|a| a.path == open),
            "an unmarked file reached the decider"
        );
    }

    // Exec of the protected copy of true fails with EPERM; other execs run.
    let err = Command::new(&no_exec).status().expect_err("exec denied");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(Command::new("/bin/true").status().expect("true").success());

    // A file created after the marks is covered by its directory's mark.
    std::fs::write(&later, "later").expect("write");
    assert!(denied(&cat, &later));
    assert!(reads(Path::new("/bin/cat"), &later, "later"));

    // Reported events arrive on the channel.
    let ev = events.recv_timeout(Duration::from_secs(5)).expect("event");
    assert_eq!(ev.verdict, Verdict::Deny);
    assert_eq!(ev.access.path, protected);

    // A prefix needs a filesystem mark.
    plan.prefix(&sub, Kinds::OPEN);
    let report = guard.set_marks(&plan).expect("marks");
    assert_eq!(report.filesystems, 1);
    assert!(denied(&cat, &sub.join("x")));
    assert!(reads(&cat, &open, "public"));

    // Marks follow the plan: without them everything is readable again.
    let report = guard.set_marks(&MarkPlan::new()).expect("clear");
    assert_eq!(
        (report.files, report.directories, report.filesystems),
        (0, 0, 0)
    );
    assert!(reads(&cat, &protected, "secret"));
    assert!(reads(&cat, &sub.join("x"), "under prefix"));
    guard.set_marks(&plan).expect("marks again");
    assert!(denied(&cat, &protected));

    let stats = guard.stats();
    assert!(stats.denied >= 5, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.response_errors, 0, "{stats:?}");
    assert_eq!(stats.overflows, 0, "{stats:?}");

    // Dropped: the group is gone and nothing is denied any more.
    drop(guard);
    assert_eq!(fanotify_groups(), groups_before);
    assert!(reads(&cat, &protected, "secret"));
    assert!(Command::new(&no_exec).status().expect("true").success());
}

/// A decider that panics: the guard answers the fail mode and counts it.
struct Panicky;

impl Decider for Panicky {
    type Event = ();

    fn decide(&self, _: &Access) -> Decision<()> {
        panic!("decider bug");
    }
}

#[test]
fn a_panicking_decider_gets_the_fail_mode() {
    let Some(_serial) = serial_as_root() else {
        return;
    };
    let dir = TempDir::new("fanotify-fail");
    let file = dir.0.join("f");
    std::fs::write(&file, "x").expect("write");
    for (mode, readable) in [
        (palisade_enforcer::fanotify::FailMode::Allow, true),
        (palisade_enforcer::fanotify::FailMode::Deny, false),
    ] {
        let config = GuardConfig {
            fail_mode: mode,
            ..GuardConfig::default()
        };
        let (guard, _events) = FanotifyGuard::start(Arc::new(Panicky), config).expect("start");
        let mut plan = MarkPlan::new();
        plan.exact(&file, Kinds::OPEN);
        guard.set_marks(&plan).expect("marks");
        assert_eq!(
            reads(Path::new("/bin/cat"), &file, "x"),
            readable,
            "{mode:?}"
        );
        let stats = guard.stats();
        assert_eq!(stats.failed, 1, "{stats:?}");
        guard.stop().expect("stop");
    }
}

/// The guard relies on this kernel behaviour: closing a group allows every
/// permission event it has not answered (`fanotify_release`), so a dead
/// agent never blocks the host.
#[test]
fn closing_the_group_allows_unanswered_events() {
    use nix::fcntl::AT_FDCWD;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
    use std::os::fd::AsFd;

    let Some(_serial) = serial_as_root() else {
        return;
    };
    let dir = TempDir::new("fanotify-close");
    let file = dir.0.join("f");
    std::fs::write(&file, "pending").expect("write");
    let group = Fanotify::init(
        InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC,
        EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC,
    )
    .expect("fanotify_init");
    group
        .mark(
            MarkFlags::FAN_MARK_ADD,
            MaskFlags::FAN_OPEN_PERM,
            AT_FDCWD,
            Some(file.as_path()),
        )
        .expect("fanotify_mark");
    let child = Command::new("/bin/cat")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::from(5000u16)).expect("poll");
    assert_eq!(ready, 1, "cat's open never reached the group");
    drop(group); // never answered
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pending");
}
