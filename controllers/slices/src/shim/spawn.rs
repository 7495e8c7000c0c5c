//! The one place that forks: `clone3` into the requested namespaces (and, on cgroup v2, straight
//! into the slice's cgroup with `CLONE_INTO_CGROUP`), then the child's setup up to `execve`.
//!
//! Everything the child needs is prepared by the parent ([`Prepared`]) so that the child only
//! makes system calls: no allocation, no locks, no Rust I/O. A failure in the child is written to
//! a close-on-exec pipe as `E`, a stage byte and the errno, and the child exits with 127; a clean
//! `execve` closes the pipe, which the parent reads as success (the scheme of `std::process`).
//! A child that must first open FIFOs writes `W` before it blocks in `open`.
//!
//! Nothing here knows about slices, specs or the API.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

use crate::Error;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Where the child's stdin comes from.
#[derive(Debug)]
pub(crate) enum Input {
    /// A file opened without blocking (`/dev/null`).
    File(CString),
    /// A FIFO, opened (blocking until a writer comes) by the child.
    Fifo(CString),
}

/// Everything the child does between `clone3` and `execve`, prepared by the parent.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// `CLONE_NEW*` flags.
    pub namespaces: u64,
    /// v2: the leaf's directory, for `CLONE_INTO_CGROUP`.
    pub cgroup_dir: Option<OwnedFd>,
    /// v1: `cgroup.procs` files the child writes itself into, first thing.
    pub cgroup_procs: Vec<CString>,
    pub mount_private: bool,
    pub mount_proc: bool,
    pub loopback_up: bool,
    pub hostname: Option<CString>,
    pub stdin: Input,
    pub stdout_fifo: Option<CString>,
    /// Capacity for the FIFOs' kernel buffers (`F_SETPIPE_SZ`, before the workload runs and
    /// before it drops privileges); 0 keeps the kernel's default.
    pub pipe_size: libc::c_int,
    /// Write end of the log pipe: stderr, and stdout without a FIFO.
    pub log: RawFd,
    pub working_dir: CString,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Paths to try `execve` with, in order (the command resolved against `PATH`).
    pub program: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// What a child failure byte means.
pub(crate) fn stage_name(stage: u8) -> &'static str {
    match stage {
        1 => "join cgroup",
        2 => "reset signals",
        3 => "make mounts private",
        4 => "mount /proc",
        5 => "bring up lo",
        6 => "set hostname",
        7 => "open stdin",
        8 => "open stdout",
        9 => "redirect output",
        10 => "change directory",
        11 => "setgroups",
        12 => "setgid",
        13 => "setuid",
        14 => "exec",
        _ => "set up",
    }
}

/// Starts the child. Returns its pid and the read end of the status pipe.
///
/// The calling process must be single-threaded: the child runs with a copy of the parent's
/// memory and must not find a lock held by a thread that does not exist in it.
pub(crate) fn spawn(prepared: &Prepared) -> Result<(Pid, OwnedFd), Error> {
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
    let argv: Vec<*const libc::c_char> = prepared
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = prepared
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut args = CloneArgs {
        flags: prepared.namespaces,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(dir) = &prepared.cgroup_dir {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without a stack behaves like fork: the child continues here on a copy of
    // this (single-threaded) process; `args` is a valid clone_args of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Error::sys("clone3")(nix::errno::Errno::last())),
        0 => child(prepared, status_w.as_raw_fd(), &argv, &envp),
        pid => {
            drop(status_w);
            Ok((Pid::from_raw(pid as i32), status_r))
        }
    }
}

/// Reports `stage` and errno on the status pipe and exits 127.
fn fail(status: RawFd, stage: u8) -> ! {
    let errno = nix::errno::Errno::last_raw();
    let mut message = [b'E', stage, 0, 0, 0, 0];
    message[2..].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: writes a stack buffer to a pipe this process owns, then exits without running
    // the parent's destructors or atexit handlers (they belong to the parent).
    unsafe {
        libc::write(status, message.as_ptr().cast(), message.len());
        libc::_exit(127)
    }
}

fn check(ret: libc::c_int, status: RawFd, stage: u8) {
    if ret < 0 {
        fail(status, stage)
    }
}

/// Gives the pipe behind `fd` the capacity `p.pipe_size` asks for. Both ends of a FIFO ask
/// for the same, so whichever opens first sets it before any data moves. The kernel refuses
/// when the size exceeds a limit (`/proc/sys/fs/pipe-max-size` without CAP_SYS_RESOURCE,
/// the user's pipe page budget) or is below what the pipe holds; the pipe then keeps the size
/// it has, which is still a bound, and the workload's log says so.
///
/// SAFETY: called by the child between clone3 and execve; system calls only.
unsafe fn resize_pipe(p: &Prepared, fd: RawFd) {
    if p.pipe_size <= 0 {
        return;
    }
    // SAFETY: fcntl and write on descriptors this process owns; a static message.
    unsafe {
        if libc::fcntl(fd, libc::F_SETPIPE_SZ, p.pipe_size) < 0 {
            let message = b"rube: could not resize the pipe (F_SETPIPE_SZ); it keeps its size\n";
            libc::write(p.log, message.as_ptr().cast(), message.len());
        }
    }
}

/// The child: from clone3 to execve, system calls only.
fn child(
    p: &Prepared,
    status: RawFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: every call below is a plain system call on pointers to memory prepared by the
    // parent (NUL-terminated strings, null-terminated pointer arrays) or on the stack, in a
    // fresh single-threaded child that never returns to the parent's code.
    unsafe {
        // First of all, before anything of the workload runs: its cgroup (v1).
        for procs in &p.cgroup_procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd, status, 1);
            check(libc::write(fd, c"0".as_ptr().cast(), 1) as i32, status, 1);
            libc::close(fd);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()),
            status,
            2,
        );
        // Rust ignores SIGPIPE in its programs; the workload must get the default back.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if p.mount_private {
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                status,
                3,
            );
        }
        if p.mount_proc {
            check(
                libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
                status,
                4,
            );
        }
        if p.loopback_up {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            check(sock, status, 5);
            let mut ifr: libc::ifreq = std::mem::zeroed();
            ifr.ifr_name[0] = b'l' as libc::c_char;
            ifr.ifr_name[1] = b'o' as libc::c_char;
            check(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr), status, 5);
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr), status, 5);
            libc::close(sock);
        }
        if let Some(hostname) = &p.hostname {
            check(
                libc::sethostname(hostname.as_ptr(), hostname.as_bytes().len()),
                status,
                6,
            );
        }
        // Output first, so that a FIFO's wait is the last thing before exec. stdout goes to
        // the log even when a FIFO replaces it below: while the child waits for the FIFO's
        // reader it must not hold the shim's stdout, which is the launcher's report pipe (the
        // launcher reads it to its end and would wait for that reader too).
        check(libc::dup2(p.log, 2), status, 9);
        check(libc::dup2(p.log, 1), status, 9);
        let waits = matches!(p.stdin, Input::Fifo(_)) || p.stdout_fifo.is_some();
        if waits {
            libc::write(status, b"W".as_ptr().cast(), 1);
        }
        let stdin = match &p.stdin {
            Input::File(path) | Input::Fifo(path) => {
                libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
            }
        };
        check(stdin, status, 7);
        if matches!(p.stdin, Input::Fifo(_)) {
            resize_pipe(p, stdin);
        }
        check(libc::dup2(stdin, 0), status, 7);
        if let Some(fifo) = &p.stdout_fifo {
            let fd = libc::open(fifo.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd, status, 8);
            resize_pipe(p, fd);
            check(libc::dup2(fd, 1), status, 8);
        }
        if let Some(gid) = p.gid.or(p.uid) {
            check(libc::setgroups(0, std::ptr::null()), status, 11);
            check(libc::setgid(gid), status, 12);
        }
        if let Some(uid) = p.uid {
            check(libc::setuid(uid), status, 13);
        }
        check(libc::chdir(p.working_dir.as_ptr()), status, 10);
        // Like execvp: a missing file tries the next PATH entry; another error is remembered
        // and reported when nothing else works.
        let mut saved = 0;
        for program in &p.program {
            libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let errno = nix::errno::Errno::last_raw();
            if errno != libc::ENOENT && errno != libc::ENOTDIR {
                saved = errno;
            }
        }
        if saved != 0 {
            nix::errno::Errno::set_raw(saved);
        } else {
            nix::errno::Errno::set_raw(libc::ENOENT);
        }
        fail(status, 14)
    }
}
