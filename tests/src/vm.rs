//! The VM test lane: runs one command inside a qemu VM that boots one of
//! Debian's kernels, for tests of kernel features the host kernel lacks
//! (kprobes, fentry/fexit, fmod_ret, BPF-LSM).
//!
//! ```no_run
//! use palisade_tests::vm::{Kernel, Vm};
//!
//! let kernel = Kernel::debian_6_12()?;
//! let out = Vm::new(&kernel)
//!     .binary("target/debug/palisade")
//!     .data("/etc/palisade/policy.yaml", "kind: TracingPolicy\n", 0o644)
//!     .env("RUST_LOG", "debug")
//!     .run(&["palisade", "--help"])?;
//! assert_eq!(out.status, 0, "{}", out.output);
//! # Ok::<(), palisade_tests::vm::VmError>(())
//! ```
//!
//! How it works: [`Vm::run`] writes an uncompressed initramfs (a newc cpio
//! archive) into a run temp dir holding a static busybox, the binaries
//! asked for with the shared libraries and loader `ldd` names for them, the
//! extra files, and an `/init` script. `/init` mounts proc, sysfs,
//! devtmpfs, securityfs, tracefs, debugfs, bpffs, cgroup2 and tmpfs on
//! `/tmp` and `/run`, brings `lo` up, prints a begin marker, runs the
//! command, prints an end marker with its exit status and powers off. qemu
//! runs under TCG (no KVM needed) with the serial console on its stdout;
//! what the command printed (stdout and stderr, in order) is the text
//! between the markers.
//!
//! The kernels are Debian's own, fetched by `scripts/vm-kernels` into
//! [`cache_dir`]. qemu never outlives a [`Vm::run`] call: it is killed on
//! timeout and on unwinding. If the test process itself is killed, the
//! qemu left behind still names the run's temp dir on its command line, so
//! [`crate::cleanup_stale`] kills it and removes the dir.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cleanup;

/// Environment variable naming the kernel cache (default [`DEFAULT_CACHE`]).
pub const CACHE_ENV: &str = "PALISADE_VM_CACHE";
/// Where `scripts/vm-kernels` puts the kernels by default.
pub const DEFAULT_CACHE: &str = "/var/cache/palisade-vm";
/// What fetches the kernels and installs qemu and busybox.
pub const FETCH_HINT: &str = "run scripts/vm-kernels as root (scripts/setup does)";
/// How long a VM may run when [`Vm::timeout`] is not called.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);
/// The kernel command line. `quiet loglevel=1` keeps kernel messages off
/// the console (they would interleave with the command's output); the
/// `lsm=` list enables BPF-LSM whatever the kernel's default; `panic=-1`
/// with qemu's `-no-reboot` turns a panic (or a dying `/init`) into a qemu
/// exit instead of a hang.
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0 quiet loglevel=1 panic=-1 lsm=lockdown,capability,bpf";
/// Where [`Vm::binary`] puts binaries inside the VM (first in `PATH`).
pub const GUEST_BIN_DIR: &str = "/usr/local/bin";

const QEMU: &str = "qemu-system-x86_64";
const BUSYBOX: &str = "/bin/busybox";
const SCRIPT_PATH: &str = "/etc/palisade-vm/script";
/// Lines of console output kept in errors.
const TAIL_LINES: usize = 40;
/// How long qemu gets to exit after the end marker before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// How many times a guest whose kernel panics before `/init` starts the
/// command is booted. Multi-threaded TCG now and then loses a cross-vCPU
/// code patch during early boot (an `int3` oops in a just-patched static
/// key); that is the emulator, not the command, and a fresh boot passes.
/// A panic after the begin marker is never retried.
pub const BOOT_ATTEMPTS: u32 = 2;
/// What the kernel prints when it panics.
const PANIC_LINE: &[u8] = b"Kernel panic - not syncing";
/// Directories the dynamic loader searches without being told (Debian,
/// x86-64); libraries elsewhere are named in `LD_LIBRARY_PATH`.
const LOADER_DEFAULT_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// Why a VM could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The kernel is not in the cache.
    #[error("no {name} kernel: no vmlinux-* or vmlinuz-* in {dir}; {FETCH_HINT} or set {env} to a kernel image")]
    KernelMissing {
        /// The kernel (`debian-6.1`).
        name: String,
        /// The directory looked in.
        dir: PathBuf,
        /// The variable that overrides the cache.
        env: &'static str,
    },
    /// A kernel override variable names no file.
    #[error("{env} is {path}, which is not a file")]
    KernelOverride {
        /// The variable.
        env: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// qemu is not installed.
    #[error("{QEMU} is not in PATH: {FETCH_HINT}")]
    QemuMissing,
    /// The static busybox is not installed.
    #[error("no busybox at {BUSYBOX}: {FETCH_HINT}")]
    BusyboxMissing,
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write initramfs`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` failed on a binary.
    #[error("ldd {binary}: {detail}")]
    Ldd {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A shared library a binary needs is not on the host.
    #[error("{binary} needs {library}, which ldd cannot find on the host")]
    LibraryNotFound {
        /// The binary.
        binary: PathBuf,
        /// The library (`libfoo.so.1`).
        library: String,
    },
    /// A path inside the VM is not absolute and plain.
    #[error("path inside the VM {path:?}: {why}")]
    GuestPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An environment variable cannot be passed to the VM.
    #[error("environment variable {name:?}: {why}")]
    Env {
        /// Its name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// [`Vm::run`] was given no program.
    #[error("no command to run in the VM")]
    NoCommand,
    /// qemu could not be started.
    #[error("cannot start {QEMU}: {source}")]
    Spawn {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or killing qemu failed.
    #[error("{call} on {QEMU}: {source}")]
    Process {
        /// `wait` or `kill`.
        call: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The VM ran out of time and was killed.
    #[error(
        "VM with kernel {kernel} killed after {after:?} ({stage}); last console lines:\n{tail}"
    )]
    Timeout {
        /// The kernel's name.
        kernel: String,
        /// The timeout.
        after: Duration,
        /// `booting` (no begin marker yet) or `running the command`.
        stage: &'static str,
        /// The last lines of the console.
        tail: String,
    },
    /// The guest kernel panicked while booting, before `/init` started the
    /// command, on every attempt (see [`BOOT_ATTEMPTS`]).
    #[error("VM with kernel {kernel} panicked while booting, before the command started, {attempts} times; last console lines:\n{tail}")]
    BootPanic {
        /// The kernel's name.
        kernel: String,
        /// How many boots were tried.
        attempts: u32,
        /// The last lines of the console of the last attempt.
        tail: String,
    },
    /// qemu exited before the command's exit status was printed (a panic
    /// while the command ran, `/init` failed, qemu refused its arguments).
    #[error("VM with kernel {kernel} stopped ({qemu}) before the command finished; qemu stderr: {stderr:?}; last console lines:\n{tail}")]
    NoExitMarker {
        /// The kernel's name.
        kernel: String,
        /// qemu's exit status.
        qemu: ExitStatus,
        /// qemu's stderr.
        stderr: String,
        /// The last lines of the console.
        tail: String,
    },
}

/// The kernel cache: `$PALISADE_VM_CACHE`, else [`DEFAULT_CACHE`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// A kernel image to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    name: String,
    image: PathBuf,
}

impl Kernel {
    /// Debian bookworm's kernel (`linux-image-amd64`, 6.1):
    /// `$PALISADE_VM_KERNEL_6_1` if set, else from `<cache>/debian-6.1/boot/`
    /// (see [`Kernel::debian_6_12`]).
    pub fn debian_6_1() -> Result<Self, VmError> {
        Self::cached("debian-6.1", "PALISADE_VM_KERNEL_6_1")
    }

    /// Debian's 6.12 kernel for bookworm (`linux-image-6.12-amd64`, from
    /// bookworm-security): `$PALISADE_VM_KERNEL_6_12` if set, else
    /// `<cache>/debian-6.12/boot/vmlinux-*`, the uncompressed kernel
    /// `scripts/vm-kernels` takes out of the bzImage (qemu boots it through
    /// its PVH entry, seconds faster under TCG), else the bzImage
    /// `vmlinuz-*`.
    pub fn debian_6_12() -> Result<Self, VmError> {
        Self::cached("debian-6.12", "PALISADE_VM_KERNEL_6_12")
    }

    /// Any bzImage, or ELF `vmlinux` with a PVH entry; `name` is used in
    /// messages.
    pub fn from_image(name: &str, image: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            image: image.into(),
        }
    }

    fn cached(name: &str, env: &'static str) -> Result<Self, VmError> {
        if let Some(path) = std::env::var_os(env) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(VmError::KernelOverride { env, path });
            }
            return Ok(Self::from_image(name, path));
        }
        Self::in_cache(&cache_dir(), name, env)
    }

    fn in_cache(cache: &Path, name: &str, env: &'static str) -> Result<Self, VmError> {
        let dir = cache.join(name).join("boot");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        let newest = |prefix: &str| {
            files
                .iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .max()
                .cloned()
        };
        match newest("vmlinux-").or_else(|| newest("vmlinuz-")) {
            Some(image) => Ok(Self::from_image(name, image)),
            None => Err(VmError::KernelMissing {
                name: name.to_owned(),
                dir,
                env,
            }),
        }
    }

    /// The name given (`debian-6.12`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image qemu boots.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The release (`uname -r` inside) when the image is named
    /// `vmlinux-<release>` or `vmlinuz-<release>`, as Debian names them.
    pub fn release(&self) -> Option<&str> {
        let file = self.image.file_name()?.to_str()?;
        file.strip_prefix("vmlinux-")
            .or_else(|| file.strip_prefix("vmlinuz-"))
    }

    /// The build configuration: `config-<release>` next to the image.
    pub fn config(&self) -> Result<KernelConfig, VmError> {
        let name = format!("config-{}", self.release().unwrap_or_default());
        let path = self.image.with_file_name(name);
        let text = std::fs::read_to_string(&path).map_err(|source| VmError::Io {
            action: "read kernel config",
            path: path.clone(),
            source,
        })?;
        Ok(KernelConfig::parse(&text))
    }
}

/// A kernel's build configuration (`CONFIG_X=value` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    options: BTreeMap<String, String>,
}

impl KernelConfig {
    /// Reads the text of a `.config`; `# CONFIG_X is not set` and options
    /// not mentioned are both absent.
    pub fn parse(text: &str) -> Self {
        let options = text
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Self { options }
    }

    /// The value of `option` (`"CONFIG_BPF_LSM"` → `Some("y")`), quotes removed.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }

    /// Whether `option` is built in (`=y`).
    pub fn is_builtin(&self, option: &str) -> bool {
        self.get(option) == Some("y")
    }
}

/// What a command run in a VM did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOutput {
    /// The command's exit status as the shell saw it (128 + n after signal n).
    pub status: i32,
    /// What the command printed, stdout and stderr interleaved as written,
    /// with `\n` line ends.
    pub output: String,
    /// The whole serial console, boot included (for diagnostics).
    pub console: String,
    /// From starting qemu to the command starting (the begin marker).
    pub boot_time: Duration,
    /// From starting qemu to qemu's exit.
    pub total_time: Duration,
}

#[derive(Debug, Clone)]
enum Item {
    Binary {
        host: PathBuf,
        guest: Option<String>,
    },
    File {
        host: PathBuf,
        guest: String,
    },
    Data {
        guest: String,
        contents: Vec<u8>,
        mode: u32,
    },
}

/// One VM run: a kernel, files for the initramfs, environment, timeout.
/// Nothing is checked or built until [`Vm::run`]/[`Vm::run_script`].
#[derive(Debug, Clone)]
pub struct Vm {
    kernel: Kernel,
    items: Vec<Item>,
    env: Vec<(String, OsString)>,
    timeout: Duration,
    instruction_clock: bool,
}

impl Vm {
    /// A VM booting `kernel` with only busybox inside.
    pub fn new(kernel: &Kernel) -> Self {
        Self {
            kernel: kernel.clone(),
            items: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            instruction_clock: false,
        }
    }

    /// Runs the guest on qemu's instruction counter (`-icount
    /// shift=0,sleep=off`): its clocks advance 1 ns per guest instruction
    /// executed, whatever the host does meanwhile, so a time measured in the
    /// guest is a deterministic instruction count. The two vCPUs then share
    /// one host thread.
    pub fn instruction_clock(mut self) -> Self {
        self.instruction_clock = true;
        self
    }

    /// Adds a host executable as `/usr/local/bin/<its name>` (so the
    /// command can name it without a path), with the shared libraries and
    /// dynamic loader it needs at their host paths.
    pub fn binary(mut self, host: impl Into<PathBuf>) -> Self {
        self.items.push(Item::Binary {
            host: host.into(),
            guest: None,
        });
        self
    }

    /// Adds a host executable at `guest`, with its libraries and loader.
    pub fn binary_at(mut self, host: impl Into<PathBuf>, guest: &str) -> Self {
        self.items.push(Item::Binary {
            host: host.into(),
            guest: Some(guest.to_owned()),
        });
        self
    }

    /// Adds a host file at `guest` (its permissions kept, no libraries).
    pub fn file(mut self, host: impl Into<PathBuf>, guest: &str) -> Self {
        self.items.push(Item::File {
            host: host.into(),
            guest: guest.to_owned(),
        });
        self
    }

    /// Adds a file with `contents` at `guest` (e.g. a policy YAML).
    pub fn data(mut self, guest: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.items.push(Item::Data {
            guest: guest.to_owned(),
            contents: contents.into(),
            mode,
        });
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Passes the host's value of `name` (when set) to the command, e.g.
    /// `RUST_LOG` or `RUST_BACKTRACE`.
    pub fn pass_env(self, name: &str) -> Self {
        match std::env::var_os(name) {
            Some(value) => self.env(name, value),
            None => self,
        }
    }

    /// How long the VM may run, boot included (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `argv` (a program in `PATH` or a path, and its arguments) with
    /// stdin from `/dev/null`, in `/`, as root.
    pub fn run(&self, argv: &[&str]) -> Result<VmOutput, VmError> {
        if argv.is_empty() {
            return Err(VmError::NoCommand);
        }
        let command: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
        self.boot(&command.join(" "), None)
    }

    /// Runs a busybox `sh` script (e.g. several checks printing
    /// `key=value` lines); its exit status is the run's.
    pub fn run_script(&self, script: &str) -> Result<VmOutput, VmError> {
        let command = format!("{BUSYBOX} sh {SCRIPT_PATH}");
        self.boot(&command, Some(script))
    }

    fn boot(&self, command: &str, script: Option<&str>) -> Result<VmOutput, VmError> {
        let run_id = cleanup::new_run_id();
        let span = tracing::debug_span!("vm", kernel = %self.kernel.name, run_id = %run_id);
        let _enter = span.enter();
        let dir = TempDir::create(cleanup::run_temp_dir(&run_id))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let token = format!("{run_id}n{nanos}");
        let archive = self.archive(command, script, &token)?;
        let initrd = dir.path.join("initramfs.cpio");
        archive.write(&initrd)?;
        let mut attempt = 1;
        let result = loop {
            tracing::debug!(initrd = %initrd.display(), attempt, "booting");
            match self.boot_qemu(&initrd, &token) {
                Err(VmError::BootPanic { tail, .. }) if attempt < BOOT_ATTEMPTS => {
                    tracing::warn!(
                        kernel = %self.kernel.name,
                        attempt,
                        last_lines = %tail,
                        "guest kernel panicked before the command started; booting again"
                    );
                    attempt += 1;
                }
                Err(VmError::BootPanic { kernel, tail, .. }) => {
                    break Err(VmError::BootPanic {
                        kernel,
                        attempts: attempt,
                        tail,
                    })
                }
                other => break other,
            }
        };
        match &result {
            Ok(out) => tracing::debug!(status = out.status, boot = ?out.boot_time, "done"),
            Err(e) => tracing::debug!(error = %e, "failed"),
        }
        result
    }

    fn archive(
        &self,
        command: &str,
        script: Option<&str>,
        token: &str,
    ) -> Result<Archive, VmError> {
        if !Path::new(BUSYBOX).is_file() {
            return Err(VmError::BusyboxMissing);
        }
        let mut a = Archive::default();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/usr/local/bin",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/run",
            "/root",
            "/etc",
        ] {
            a.insert(d, Entry::Dir)?;
        }
        a.insert("/dev/console", Entry::CharDev { major: 5, minor: 1 })?;
        a.insert_elf(Path::new(BUSYBOX), BUSYBOX)?;
        for item in &self.items {
            match item {
                Item::Binary { host, guest } => {
                    let guest = match guest {
                        Some(g) => g.clone(),
                        None => {
                            let name = host.file_name().ok_or_else(|| VmError::GuestPath {
                                path: host.display().to_string(),
                                why: "the host path names no file",
                            })?;
                            format!("{GUEST_BIN_DIR}/{}", name.to_string_lossy())
                        }
                    };
                    a.insert_elf(host, &guest)?;
                }
                Item::File { host, guest } => a.insert_host_file(host, guest)?,
                Item::Data {
                    guest,
                    contents,
                    mode,
                } => a.insert(
                    guest,
                    Entry::File {
                        source: Source::Bytes(contents.clone()),
                        mode: *mode,
                    },
                )?,
            }
        }
        if let Some(script) = script {
            a.insert(
                SCRIPT_PATH,
                Entry::File {
                    source: Source::Bytes(script.as_bytes().to_vec()),
                    mode: 0o644,
                },
            )?;
        }
        let init = init_script(command, &self.env, &a.library_path(), token)?;
        a.insert(
            "/init",
            Entry::File {
                source: Source::Bytes(init.into_bytes()),
                mode: 0o755,
            },
        )?;
        Ok(a)
    }

    fn boot_qemu(&self, initrd: &Path, token: &str) -> Result<VmOutput, VmError> {
        let mut cmd = Command::new(QEMU);
        // `-nodefaults` rather than `-nographic`: no NIC (its iPXE option
        // ROM costs seconds under TCG), no VGA, no monitor on stdio.
        if self.instruction_clock {
            cmd.args([
                "-accel",
                "tcg,thread=single",
                "-icount",
                "shift=0,sleep=off",
            ]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.args(["-m", "2G", "-smp", "2"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(self.kernel.image())
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", KERNEL_CMDLINE])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                VmError::QemuMissing
            } else {
                VmError::Spawn { source }
            }
        })?;
        let mut qemu = Qemu { child };
        let stderr = qemu.child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        if let Some(mut pipe) = qemu.child.stdout.take() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }

        let deadline = start + self.timeout;
        let mut console = Console::new(token);
        let mut boot_time = None;
        while console.end.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => {
                    if console.push(&chunk) {
                        boot_time = Some(start.elapsed());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    qemu.kill()?;
                    return Err(VmError::Timeout {
                        kernel: self.kernel.name.clone(),
                        after: self.timeout,
                        stage: if console.begin.is_some() {
                            "running the command"
                        } else {
                            "booting"
                        },
                        tail: tail(&console.bytes),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let (Some(begin), Some((end, status)), Some(boot_time)) =
            (console.begin, console.end, boot_time)
        else {
            let status = qemu.wait_until(deadline)?;
            if console.begin.is_none() && find(&console.bytes, PANIC_LINE, 0).is_some() {
                return Err(VmError::BootPanic {
                    kernel: self.kernel.name.clone(),
                    attempts: 1,
                    tail: tail(&console.bytes),
                });
            }
            return Err(VmError::NoExitMarker {
                kernel: self.kernel.name.clone(),
                qemu: status,
                stderr: stderr
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                tail: tail(&console.bytes),
            });
        };
        // `poweroff -f` follows at once; a qemu that lingers is killed.
        qemu.wait_until(Instant::now() + POWEROFF_GRACE)?;
        let total_time = start.elapsed();
        Ok(VmOutput {
            status,
            output: crlf_to_lf(&console.bytes[begin..end]),
            console: crlf_to_lf(&console.bytes),
            boot_time,
            total_time,
        })
    }
}

/// The serial console as it arrives, and where the markers are in it.
struct Console {
    markers: Markers,
    bytes: Vec<u8>,
    /// Start of the command's output, once the begin marker is complete.
    begin: Option<usize>,
    /// End of the command's output and its exit status.
    end: Option<(usize, i32)>,
    /// Where the next search starts: the serial port delivers small
    /// chunks, and rescanning everything for each would be quadratic.
    scan_from: usize,
}

impl Console {
    fn new(token: &str) -> Self {
        Self {
            markers: Markers::new(token),
            bytes: Vec::new(),
            begin: None,
            end: None,
            scan_from: 0,
        }
    }

    /// Appends `chunk`; true when it completed the begin marker.
    fn push(&mut self, chunk: &[u8]) -> bool {
        self.bytes.extend_from_slice(chunk);
        let mut began = false;
        if self.begin.is_none() {
            self.begin = self.markers.find_begin(&self.bytes, self.scan_from);
            if let Some(at) = self.begin {
                self.scan_from = at;
                began = true;
            }
        }
        if self.begin.is_some() && self.end.is_none() {
            self.end = self.markers.find_end(&self.bytes, self.scan_from);
        }
        let tail_start = self.bytes.len().saturating_sub(self.markers.longest());
        self.scan_from = self.scan_from.max(tail_start);
        began
    }
}

/// The begin and end markers of one run. The init script builds them from
/// a shell variable, so that printing `/init` does not print them.
struct Markers {
    begin: Vec<u8>,
    end_prefix: Vec<u8>,
}

impl Markers {
    fn new(token: &str) -> Self {
        Self {
            begin: format!("@@palisade-vm:{token}:begin@@").into_bytes(),
            end_prefix: format!("@@palisade-vm:{token}:exit=").into_bytes(),
        }
    }

    /// A bound on the length of a marker still incomplete at the end of
    /// the console: a search starting this far back finds it.
    fn longest(&self) -> usize {
        // `exit=` is followed by at most 10 digits and `@@`; the begin
        // marker may wait for its line end (2 bytes).
        self.begin.len().max(self.end_prefix.len() + 12) + 2
    }

    /// Where the command's output starts: after the begin marker and its
    /// line end. Found anywhere in a line, so a kernel message printed on
    /// the same line does not hide it.
    fn find_begin(&self, console: &[u8], from: usize) -> Option<usize> {
        let at = find(console, &self.begin, from)? + self.begin.len();
        let rest = &console[at..];
        let skip = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else if rest.is_empty() || rest == b"\r" {
            // The line end has not arrived yet.
            return None;
        } else {
            0
        };
        Some(at + skip)
    }

    /// Where the command's output ends and its exit status, once the
    /// whole end marker is there (a look-alike without digits and `@@`
    /// is passed over).
    fn find_end(&self, console: &[u8], mut from: usize) -> Option<(usize, i32)> {
        while let Some(at) = find(console, &self.end_prefix, from) {
            let rest = &console[at + self.end_prefix.len()..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if rest[digits..].starts_with(b"@@") {
                let status = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok());
                if let Some(status) = status {
                    return Some((at, status));
                }
            }
            from = at + 1;
        }
        None
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn crlf_to_lf(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n")
}

fn tail(console: &[u8]) -> String {
    let text = crlf_to_lf(console);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// qemu, killed and reaped when dropped unless it already exited.
struct Qemu {
    child: Child,
}

impl Qemu {
    fn kill(&mut self) -> Result<(), VmError> {
        if self
            .child
            .try_wait()
            .map_err(|source| VmError::Process {
                call: "wait",
                source,
            })?
            .is_none()
        {
            self.child.kill().map_err(|source| VmError::Process {
                call: "kill",
                source,
            })?;
        }
        self.child.wait().map_err(|source| VmError::Process {
            call: "wait",
            source,
        })?;
        Ok(())
    }

    /// Waits for qemu to exit until `deadline`, then kills it.
    fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus, VmError> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    self.kill()?;
                    return self.child.wait().map_err(|source| VmError::Process {
                        call: "wait",
                        source,
                    });
                }
                Err(source) => {
                    return Err(VmError::Process {
                        call: "wait",
                        source,
                    })
                }
            }
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The run's temp dir, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(path: PathBuf) -> Result<Self, VmError> {
        std::fs::create_dir_all(&path).map_err(|source| VmError::Io {
            action: "create",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove VM temp dir");
        }
    }
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `/init` of the initramfs.
fn init_script(
    command: &str,
    env: &[(String, OsString)],
    library_path: &[String],
    token: &str,
) -> Result<String, VmError> {
    let mut exports = String::new();
    for (name, value) in env {
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(VmError::Env {
                name: name.clone(),
                why: "not a shell variable name",
            });
        }
        let Some(value) = value.to_str().filter(|v| !v.contains('\0')) else {
            return Err(VmError::Env {
                name: name.clone(),
                why: "its value is not UTF-8 without NUL",
            });
        };
        exports.push_str(&format!("export {name}={}\n", sh_quote(value)));
    }
    if !library_path.is_empty() {
        exports.push_str(&format!(
            "export LD_LIBRARY_PATH={}\n",
            sh_quote(&library_path.join(":"))
        ));
    }
    Ok(format!(
        r#"#!/bin/busybox sh
# Written by palisade_tests::vm: mounts, runs one command, prints its exit
# status between markers, powers off.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH={GUEST_BIN_DIR}:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin
export HOME=/root
umask 022
m() {{
  mkdir -p "$2" && mount -t "$1" "$1" "$2" || echo "palisade-vm: cannot mount $1 on $2" >&2
}}
m sysfs /sys
m devtmpfs /dev
m securityfs /sys/kernel/security
m tracefs /sys/kernel/tracing
m debugfs /sys/kernel/debug
m bpf /sys/fs/bpf
m cgroup2 /sys/fs/cgroup
m tmpfs /tmp
m tmpfs /run
ip link set lo up || echo "palisade-vm: cannot bring lo up" >&2
{exports}cd /
t={token}
echo "@@palisade-vm:$t:begin@@"
{command} </dev/null
s=$?
echo "@@palisade-vm:$t:exit=$s@@"
poweroff -f
"#
    ))
}

#[derive(Debug)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug)]
enum Entry {
    Dir,
    File { source: Source, mode: u32 },
    CharDev { major: u32, minor: u32 },
}

/// The initramfs: entries by absolute path inside the VM. A parent sorts
/// before its children, which is the order the kernel needs.
#[derive(Debug, Default)]
struct Archive {
    entries: BTreeMap<String, Entry>,
    /// Directories of the shared libraries added (not of loaders).
    library_dirs: BTreeSet<String>,
}

impl Archive {
    /// Adds `entry` at `guest` and any missing parent directories.
    fn insert(&mut self, guest: &str, entry: Entry) -> Result<(), VmError> {
        let path = guest_path(guest)?;
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            parent.push('/');
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    fn insert_host_file(&mut self, host: &Path, guest: &str) -> Result<(), VmError> {
        let meta = std::fs::metadata(host).map_err(|source| VmError::Io {
            action: "read",
            path: host.to_owned(),
            source,
        })?;
        self.insert(
            guest,
            Entry::File {
                source: Source::Host(host.to_owned()),
                mode: meta.permissions().mode() & 0o7777,
            },
        )
    }

    /// Adds an executable and, for a dynamically linked ELF, its loader
    /// and libraries at the paths `ldd` gives.
    fn insert_elf(&mut self, host: &Path, guest: &str) -> Result<(), VmError> {
        self.insert_host_file(host, guest)?;
        if !is_elf(host)? {
            return Ok(());
        }
        let deps = ldd(host)?;
        if let Some(loader) = &deps.loader {
            self.insert_host_file(loader, &loader.to_string_lossy())?;
        }
        for lib in &deps.libs {
            let guest = guest_path(&lib.to_string_lossy())?;
            self.insert_host_file(lib, &guest)?;
            if let Some((dir, _)) = guest.rsplit_once('/') {
                self.library_dirs.insert(dir.to_owned());
            }
        }
        Ok(())
    }

    /// Directories holding libraries that the loader does not search by
    /// itself (there is no `ld.so.cache` in the VM).
    fn library_path(&self) -> Vec<String> {
        self.library_dirs
            .iter()
            .filter(|d| !LOADER_DEFAULT_DIRS.contains(&d.as_str()))
            .cloned()
            .collect()
    }

    fn write(&self, path: &Path) -> Result<(), VmError> {
        let io_err = |source| VmError::Io {
            action: "write initramfs",
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_err)?;
        let mut w = BufWriter::new(file);
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            // newc names are relative to the root.
            let name = &name[1..];
            match entry {
                Entry::Dir => newc_header(&mut w, ino, 0o040_755, 2, 0, (0, 0), name),
                Entry::CharDev { major, minor } => {
                    newc_header(&mut w, ino, 0o020_600, 1, 0, (*major, *minor), name)
                }
                Entry::File {
                    source: Source::Bytes(b),
                    mode,
                } => newc_header(&mut w, ino, 0o100_000 | mode, 1, b.len(), (0, 0), name)
                    .and_then(|()| w.write_all(b))
                    .and_then(|()| pad4(&mut w, b.len())),
                Entry::File {
                    source: Source::Host(host),
                    mode,
                } => {
                    let read_err = |source| VmError::Io {
                        action: "read",
                        path: host.clone(),
                        source,
                    };
                    let mut f = File::open(host).map_err(read_err)?;
                    let len = f.metadata().map_err(read_err)?.len();
                    let size = usize::try_from(len).map_err(|_| {
                        read_err(std::io::Error::other("too large for an initramfs"))
                    })?;
                    newc_header(&mut w, ino, 0o100_000 | mode, 1, size, (0, 0), name)
                        .map_err(io_err)?;
                    let copied =
                        std::io::copy(&mut (&mut f).take(len), &mut w).map_err(read_err)?;
                    if copied != len {
                        return Err(read_err(std::io::Error::other(
                            "the file shrank while being copied",
                        )));
                    }
                    pad4(&mut w, size)
                }
            }
            .map_err(io_err)?;
        }
        newc_header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!").map_err(io_err)?;
        w.flush().map_err(io_err)
    }
}

/// `guest` as an absolute path without `..`, `.` or repeated slashes.
fn guest_path(guest: &str) -> Result<String, VmError> {
    let err = |why| VmError::GuestPath {
        path: guest.to_owned(),
        why,
    };
    if !guest.starts_with('/') {
        return Err(err("not absolute"));
    }
    if guest.contains('\0') {
        return Err(err("contains NUL"));
    }
    let mut out = String::new();
    for c in Path::new(guest).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => {
                out.push('/');
                out.push_str(&part.to_string_lossy());
            }
            _ => return Err(err("contains ..")),
        }
    }
    if out.is_empty() {
        return Err(err("is the root"));
    }
    Ok(out)
}

fn newc_header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
) -> std::io::Result<()> {
    let namesize = name.len() + 1;
    let fields: [usize; 13] = [
        ino as usize,
        mode as usize,
        0, // uid
        0, // gid
        nlink as usize,
        0, // mtime
        size,
        0, // dev major
        0, // dev minor
        rdev_major as usize,
        rdev_minor as usize,
        namesize,
        0, // check
    ];
    if fields.iter().any(|&f| f > u32::MAX as usize) {
        return Err(std::io::Error::other(format!(
            "{name}: a field does not fit a newc header"
        )));
    }
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08X}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(b"\0")?;
    pad4(w, header.len() + namesize)
}

fn pad4(w: &mut impl Write, len: usize) -> std::io::Result<()> {
    w.write_all(&[0u8; 3][..(4 - len % 4) % 4])
}

fn is_elf(host: &Path) -> Result<bool, VmError> {
    let mut magic = [0u8; 4];
    let mut f = File::open(host).map_err(|source| VmError::Io {
        action: "read",
        path: host.to_owned(),
        source,
    })?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// What a dynamically linked ELF needs, as `ldd` tells.
#[derive(Debug, Default, PartialEq, Eq)]
struct LddDeps {
    /// The dynamic loader (`PT_INTERP`), found through its absolute path.
    loader: Option<PathBuf>,
    /// Shared libraries, found through the loader's search path.
    libs: Vec<PathBuf>,
}

/// The loader and shared libraries of `binary` (none when it is static).
fn ldd(binary: &Path) -> Result<LddDeps, VmError> {
    let out = Command::new("ldd")
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Ldd {
            binary: binary.to_owned(),
            detail: format!("cannot run ldd: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(LddDeps::default());
        }
        return Err(VmError::Ldd {
            binary: binary.to_owned(),
            detail: format!("{}: {}", out.status, stderr.trim()),
        });
    }
    parse_ldd(&stdout).map_err(|library| VmError::LibraryNotFound {
        binary: binary.to_owned(),
        library,
    })
}

/// Reads `ldd` output; `Err(name)` for a library it did not find.
///
/// Libraries are `name => /path (0xaddress)`; the loader is
/// `/path (0xaddress)`; the vDSO and "statically linked" have no path.
fn parse_ldd(text: &str) -> Result<LddDeps, String> {
    let mut deps = LddDeps::default();
    let path_of = |s: &str| {
        let path = s.split(" (").next().unwrap_or_default().trim();
        path.starts_with('/').then(|| PathBuf::from(path))
    };
    for line in text.lines().map(str::trim) {
        match line.split_once("=>") {
            Some((name, target)) => {
                if target.trim().starts_with("not found") {
                    return Err(name.trim().to_owned());
                }
                deps.libs.extend(path_of(target));
            }
            None => {
                if let Some(loader) = path_of(line) {
                    deps.loader = Some(loader);
                }
            }
        }
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ldd_output_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc8a5f2000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c9d0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1c7ef000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1ca06000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            LddDeps {
                loader: Some("/lib64/ld-linux-x86-64.so.2".into()),
                libs: [
                    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                ]
                .map(PathBuf::from)
                .to_vec(),
            }
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            LddDeps::default()
        );
        assert_eq!(
            parse_ldd("\tlibbpf.so.1 => not found\n").unwrap_err(),
            "libbpf.so.1"
        );
    }

    #[test]
    fn missing_kernel_names_the_fix() {
        let err = Kernel::in_cache(
            Path::new("/nonexistent"),
            "debian-6.1",
            "PALISADE_VM_KERNEL_6_1",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/debian-6.1/boot")
                && msg.contains("scripts/vm-kernels")
                && msg.contains("PALISADE_VM_KERNEL_6_1"),
            "{msg}"
        );
        let err = Kernel::from_image("x", "/nonexistent/vmlinux-0")
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/config-0"), "{err}");
    }

    #[test]
    fn kernel_config_parsed() {
        let c = KernelConfig::parse(
            "# comment\nCONFIG_BPF_LSM=y\n# CONFIG_FUNCTION_ERROR_INJECTION is not set\nCONFIG_LSM=\"lockdown,bpf\"\nCONFIG_VETH=m\n",
        );
        assert!(c.is_builtin("CONFIG_BPF_LSM"));
        assert!(!c.is_builtin("CONFIG_VETH"));
        assert_eq!(c.get("CONFIG_VETH"), Some("m"));
        assert_eq!(c.get("CONFIG_LSM"), Some("lockdown,bpf"));
        assert_eq!(c.get("CONFIG_FUNCTION_ERROR_INJECTION"), None);
    }

    #[test]
    fn guest_paths_checked() {
        assert_eq!(
            guest_path("/etc//palisade/p.yaml").unwrap(),
            "/etc/palisade/p.yaml"
        );
        assert_eq!(guest_path("/a/./b/").unwrap(), "/a/b");
        for bad in ["etc/x", "/", "/a/../b"] {
            assert!(guest_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_checked_and_values_quoted() {
        let env = [("A_1".to_owned(), OsString::from("it's $HOME"))];
        let init = init_script("true", &env, &[], "t").unwrap();
        assert!(init.contains(r"export A_1='it'\''s $HOME'"), "{init}");
        for bad in ["1A", "A-B", ""] {
            let env = [(bad.to_owned(), OsString::from("x"))];
            assert!(init_script("true", &env, &[], "t").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn markers_found_in_chunks_of_any_size() {
        let text = b"[ 0.1] boot\r\n@@palisade-vm:9r1n2:begin@@\r\nhello @@palisade-vm:9r1n2:exit=\r\n@@palisade-vm:9r1n2:exit=13@@\r\n";
        for size in [1, 2, 3, 7, 64, text.len()] {
            let mut c = Console::new("9r1n2");
            let began = text.chunks(size).filter(|chunk| c.push(chunk)).count();
            assert_eq!(began, 1, "chunk size {size}");
            let (begin, (end, status)) = (c.begin.unwrap(), c.end.unwrap());
            assert_eq!(status, 13, "chunk size {size}");
            assert_eq!(
                crlf_to_lf(&c.bytes[begin..end]),
                "hello @@palisade-vm:9r1n2:exit=\n",
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn markers_found_amid_kernel_lines() {
        let m = Markers::new("1r0n5");
        let console =
            b"boot\r\n@@palisade-vm:1r0n5:begin@@\r\nout\r\n[ 1.0] x\r\nlast@@palisade-vm:1r0n5:exit=7@@\r\n";
        let begin = m.find_begin(console, 0).unwrap();
        let (end, status) = m.find_end(console, begin).unwrap();
        assert_eq!(status, 7);
        assert_eq!(crlf_to_lf(&console[begin..end]), "out\n[ 1.0] x\nlast");
        // Not yet complete: no status.
        assert_eq!(m.find_end(b"@@palisade-vm:1r0n5:exit=1", 0), None);
        assert_eq!(m.find_begin(b"@@palisade-vm:1r0n5:begin@@", 0), None);
    }

    /// The archive as GNU cpio reads it (installed by scripts/vm-kernels).
    #[test]
    fn newc_archive_read_by_cpio() {
        let dir = TempDir::create(cleanup::run_temp_dir(&cleanup::new_run_id())).unwrap();
        let mut a = Archive::default();
        a.insert("/dev/console", Entry::CharDev { major: 5, minor: 1 })
            .unwrap();
        for (name, len) in [("/etc/a/b.yaml", 5usize), ("/x", 0), ("/usr/y", 8)] {
            a.insert(
                name,
                Entry::File {
                    source: Source::Bytes(vec![b'z'; len]),
                    mode: 0o644,
                },
            )
            .unwrap();
        }
        let host = dir.path.join("host-file");
        std::fs::write(&host, b"abc").unwrap();
        a.insert_host_file(&host, "/h").unwrap();
        let cpio = dir.path.join("a.cpio");
        a.write(&cpio).unwrap();
        let out = Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&cpio)
            .output()
            .unwrap_or_else(|e| panic!("cpio: {e}; {FETCH_HINT}"));
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8(out.stdout).unwrap();
        let rows: Vec<(String, String, String)> = listing
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_owned(), f[4].to_owned(), f[f.len() - 1].to_owned())
            })
            .collect();
        let expect = [
            ("drwxr-xr-x", "0", "dev"),
            ("crw-------", "5,", "dev/console"),
            ("drwxr-xr-x", "0", "etc"),
            ("drwxr-xr-x", "0", "etc/a"),
            ("-rw-r--r--", "5", "etc/a/b.yaml"),
            ("-rw-r--r--", "3", "h"),
            ("drwxr-xr-x", "0", "usr"),
            ("-rw-r--r--", "8", "usr/y"),
            ("-rw-r--r--", "0", "x"),
        ];
        let expect: Vec<(String, String, String)> = expect
            .iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect();
        assert_eq!(rows, expect, "{listing}");
    }
}
