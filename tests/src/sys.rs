//! The only `unsafe` of the crate: entering a network namespace between
//! `fork` and `exec`, and a signal handler that wakes a cleanup thread.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Makes `cmd` enter the network namespace `netns_fd` right before `exec`,
/// keeping every other namespace (notably the mount namespace, so that
/// `/sys` and `/sys/fs/bpf` stay the host's). The signal mask is also reset,
/// so the child can always be stopped with SIGTERM.
///
/// `netns_fd` must stay open until `cmd.spawn()` has returned.
pub(crate) fn pre_exec_setns(cmd: &mut Command, netns_fd: RawFd) {
    let enter = move || -> std::io::Result<()> {
        // SAFETY: this runs in the child between fork and exec, where only
        // async-signal-safe functions may be called: `setns` and
        // `sigprocmask` are plain system calls, the sigset is a local value
        // on the stack and nothing allocates. `netns_fd` is a valid
        // descriptor because the caller keeps it open until spawn returns
        // and the child inherits the parent's descriptor table.
        unsafe {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        Ok(())
    };
    // SAFETY: the closure only does async-signal-safe system calls (see
    // above) and touches no state shared with other threads.
    unsafe {
        cmd.pre_exec(enter);
    }
}

/// Write end of the signal pipe; -1 until [`install_signal_pipe`] ran.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // Signal numbers fit in a byte (1..=64).
        let byte = sig as u8;
        // SAFETY: `write` is async-signal-safe; `byte` lives on this stack
        // frame for the duration of the call; a failed write (pipe full) is
        // harmless because one byte is already waiting to be read.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Routes SIGINT, SIGTERM and SIGHUP to a pipe and returns its read end:
/// each signal becomes one byte (the signal number). Must be called once.
pub(crate) fn install_signal_pipe() -> nix::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe()?;
    // The write end lives for the rest of the process (the handler may run
    // at any time), so it is deliberately leaked.
    SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: `on_signal` only loads an atomic and calls `write`, both
        // async-signal-safe; it does not allocate, lock or panic.
        unsafe { sigaction(sig, &action)? };
    }
    Ok(read)
}

/// Puts back the default action of the signals [`install_signal_pipe`]
/// caught, so that a second Ctrl-C during cleanup ends the process at once.
pub(crate) fn restore_default_signals() {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing the default disposition runs no code of ours.
        let _ = unsafe { sigaction(sig, &action) };
    }
}
