//! The shim: one process per slice, the workload's parent (like conmon or containerd-shim).
//!
//! [`launch`] writes the [`LaunchSpec`] into the slice dir and starts `<shim_exe> shim --dir
//! <dir>`, which starts a new session and re-executes itself detached (the double fork), so
//! neither a crash nor a restart of the rubelet kills or loses the workload. The detached shim
//!
//! 1. takes the dir's lock (one shim per dir), creates the slice's cgroup leaf with its limits,
//! 2. `clone3`s the workload into its namespaces and, before its first instruction, its cgroup
//!    (`CLONE_INTO_CGROUP` on v2; on v1 the child writes itself into `cgroup.procs` before
//!    anything else) — see [`spawn`],
//! 3. records `shim.json` and tells `launch` the pid (or the exec error) on its stdout,
//! 4. copies the workload's output into the rotated log ([`crate::logs`]), enforces the
//!    deadline, and kills the cgroup (SIGTERM, grace, SIGKILL) on deadline or on SIGTERM from
//!    [`stop`],
//! 5. reaps the workload, reads the OOM counter, removes the cgroup leaf, writes `outcome.json`
//!    atomically, and exits.
//!
//! What a slice dir holds (its files, and [`crate::spec::read`], which tells a live shim from
//! an outcome or a lost one) is [`crate::spec`]'s. Nothing here talks to the apiserver or
//! decides whether a slice should run.

mod report;
mod spawn;
pub mod supervise;

pub use report::{NotAReport, Report};

use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cgroups::{CgroupPath, Hierarchy};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use self::supervise::{Action, Deadline, Event, Exit, Phase};
use crate::Error;
use crate::logs::LogWriter;
use crate::spec::{
    DEFAULT_PATH, LOCK, LaunchSpec, OUTCOME, Outcome, RunningRecord, SHIM, SHIM_LOG, SPEC, STOP,
    ShimState, now_ms, read, read_json, start_ticks, write_atomic, write_json,
};

/// A started workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    pub pid: u32,
    pub shim_pid: u32,
}

/// Starts a shim for `spec` in slice dir `dir` (made when missing; an earlier run's records
/// are removed first) and returns once the workload has exec'd, or waits on its FIFOs.
///
/// # Errors
/// [`Error::Exec`] when the workload could not be started (its outcome is recorded too, so
/// [`read`] says `Exited`); [`Error::AlreadyRunning`] when a live shim has `dir`;
/// [`Error::ShimGaveUp`] when the shim gave up before the workload existed (e.g. the cgroup
/// could not be made); [`Error::ShimSilent`] and [`Error::ShimReport`] when it died without a
/// report or said something else; [`Error::Io`].
pub fn launch(shim_exe: &Path, dir: &Path, spec: &LaunchSpec) -> Result<Launched, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    if let ShimState::Running(_) = read(dir)? {
        return Err(Error::AlreadyRunning {
            dir: dir.to_owned(),
        });
    }
    for stale in [OUTCOME, SHIM, STOP] {
        remove_if_exists(&dir.join(stale))?;
    }
    write_json(&dir.join(SPEC), spec)?;
    let log_path = dir.join(SHIM_LOG);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io(&log_path))?;
    let mut child = Command::new(shim_exe)
        .arg("shim")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(Error::io(shim_exe))?;
    // The pipe closes when the detached shim has reported (it then points its stdout at
    // /dev/null) or died.
    let mut report = String::new();
    let read_result = child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut report);
    let _ = child.wait();
    read_result.map_err(Error::io(shim_exe))?;
    let Some(line) = report.lines().next() else {
        return Err(Error::ShimSilent {
            dir: dir.to_owned(),
            log: log_path.clone(),
            last_line: last_line(&log_path),
        });
    };
    match line.parse::<Report>() {
        Ok(Report::Started { pid, shim_pid }) => Ok(Launched { pid, shim_pid }),
        Ok(Report::ExecFailed(message)) => Err(Error::Exec {
            command: spec.command.clone(),
            message,
        }),
        Ok(Report::GaveUp(message)) => Err(Error::ShimGaveUp {
            dir: dir.to_owned(),
            message,
        }),
        Err(NotAReport(line)) => Err(Error::ShimReport {
            dir: dir.to_owned(),
            line,
        }),
    }
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_owned))
        .unwrap_or_default()
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

/// Asks the shim in `dir` to kill its workload: SIGTERM to the cgroup, SIGKILL after `grace`.
/// The shim records the outcome ("stopped") and exits; this does not wait for that. Returns
/// whether a live shim was asked.
pub fn stop(dir: &Path, grace: Duration) -> Result<bool, Error> {
    let ShimState::Running(record) = read(dir)? else {
        return Ok(false);
    };
    write_atomic(&dir.join(STOP), grace.as_millis().to_string().as_bytes())?;
    match nix::sys::signal::kill(Pid::from_raw(record.shim_pid as i32), Signal::SIGTERM) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(Error::sys(format!("signal shim {}", record.shim_pid))(e)),
    }
}

/// The entry point of `rube-shim shim --dir <dir>` and `rubelet shim --dir <dir>`. `args` are
/// the arguments after the program name, starting with `shim`.
pub fn main_from_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut dir = None;
    let mut detached = false;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--dir") => dir = iter.next().map(PathBuf::from),
            Some("--detached") => detached = true,
            _ => {}
        }
    }
    let (Some("shim"), Some(dir)) = (args.first().and_then(|a| a.to_str()), dir) else {
        eprintln!("usage: shim --dir <slice dir>");
        return ExitCode::from(2);
    };
    if !detached {
        // A new session, then the real shim as a child that this process leaves behind: it
        // is re-parented to init, and the rubelet has nothing to reap or to lose.
        let _ = nix::unistd::setsid();
        let spawned = Command::new("/proc/self/exe")
            .args(&args)
            .arg("--detached")
            .stdin(Stdio::null())
            .spawn();
        return match spawned {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                println!(
                    "{}",
                    Report::GaveUp(format!("cannot start the detached shim: {e}"))
                );
                ExitCode::FAILURE
            }
        };
    }
    match run(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Reaches `launch` when nothing was reported yet; the log otherwise.
            println!("{}", Report::GaveUp(e.to_string()));
            eprintln!("shim {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<(), Error> {
    let lock_path = dir.join(LOCK);
    let lock_file = std::fs::File::create(&lock_path).map_err(Error::io(&lock_path))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        Error::sys(format!(
            "lock {} (another shim runs here)",
            lock_path.display()
        ))(e)
    })?;
    let spec: LaunchSpec = read_json(&dir.join(SPEC))?.ok_or_else(|| Error::Decode {
        path: dir.join(SPEC),
        reason: "missing".into(),
    })?;
    let hierarchy = match &spec.hierarchy {
        Some(h) => h.hierarchy(),
        None => Hierarchy::detect("rube")?,
    };
    let cgroup = CgroupPath::new(&spec.cgroup)?;
    // The pipes before the leaf: a refusal here leaves nothing to clean up.
    for fifo in [&spec.stdin_pipe, &spec.stdout_pipe].into_iter().flatten() {
        make_fifo(fifo)?;
    }
    hierarchy.create(&cgroup, &spec.limits.into())?;

    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(Error::sys("block signals"))?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(Error::sys("signalfd"))?;
    let (log_r, log_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
    let mut log = LogWriter::open(dir, spec.log_file_bytes, spec.log_files)?;
    let prepared = prepare(&spec, &hierarchy, &cgroup, log_w.as_raw_fd())?;
    let cgroup_name = cgroup.to_string();
    let (pid, status_r) = match spawn::spawn(&prepared) {
        Ok(spawned) => spawned,
        Err(e) => {
            let _ = hierarchy.remove(&cgroup, Duration::from_secs(1));
            return Err(e);
        }
    };
    drop(prepared);
    drop(log_w);
    let started_ms = now_ms();
    let started = Instant::now();
    let mut message = String::new();
    let mut status_pipe = Some(status_r);
    match read_status(status_pipe.as_ref().expect("just set")) {
        StatusMessage::Execd => status_pipe = None,
        StatusMessage::Waiting => {}
        StatusMessage::Failed(why) => {
            let _ = waitpid(pid, None);
            let removed = hierarchy.remove(&cgroup, Duration::from_secs(1));
            let mut outcome = Outcome {
                exit_code: Some(127),
                started_ms,
                finished_ms: now_ms(),
                pid: pid.as_raw() as u32,
                cgroup: cgroup_name,
                message: why.clone(),
                ..Default::default()
            };
            if let Err(e) = removed {
                outcome.message = format!("{why}; {e}");
            }
            write_json(&dir.join(OUTCOME), &outcome)?;
            report(&Report::ExecFailed(why));
            return Ok(());
        }
    }
    let shim_pid = std::process::id();
    write_json(
        &dir.join(SHIM),
        &RunningRecord {
            pid: pid.as_raw() as u32,
            shim_pid,
            shim_start_ticks: start_ticks(shim_pid).unwrap_or(0),
            started_ms,
            cgroup: cgroup_name.clone(),
        },
    )?;
    report(&Report::Started {
        pid: pid.as_raw() as u32,
        shim_pid,
    });

    let mut phase = Phase::Running {
        deadline: spec
            .timeout_seconds
            .filter(|s| *s > 0)
            .map(|seconds| Deadline {
                at: started + Duration::from_secs(seconds),
                seconds,
            }),
        grace: Duration::from_millis(spec.kill_grace_ms),
    };
    let mut log_pipe = Some(log_r);
    let mut buf = vec![0u8; 64 * 1024];
    // The loop only gathers events and performs actions; `supervise::next` decides.
    while !phase.is_over() {
        let ready = wait(
            &sfd,
            log_pipe.as_ref(),
            status_pipe.as_ref(),
            phase.wake_at(),
        )?;
        let mut events = Vec::new();
        let mut reaped = None;
        if ready.signal {
            while let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    let asked = std::fs::read_to_string(dir.join(STOP))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(Duration::from_millis);
                    events.push(Event::StopAsked {
                        grace: asked.unwrap_or(Duration::from_millis(spec.kill_grace_ms)),
                    });
                }
            }
            reaped = reap(pid);
        }
        if ready.log {
            match nix::unistd::read(log_pipe.as_ref().expect("ready").as_fd(), &mut buf) {
                Ok(0) => log_pipe = None,
                Ok(n) => log.write(&buf[..n])?,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(Error::sys("read log pipe")(e)),
            }
        }
        if ready.status {
            match read_status(status_pipe.as_ref().expect("ready")) {
                StatusMessage::Waiting => {}
                StatusMessage::Execd => status_pipe = None,
                StatusMessage::Failed(why) => {
                    status_pipe = None;
                    events.push(Event::LaunchFailed(why));
                }
            }
        }
        // Time is looked at before an exit seen in the same round: a deadline that passed
        // before the shim woke still counts.
        events.push(Event::Tick);
        if let Some(exit) = reaped {
            let oom_kills = hierarchy.stats(&cgroup).map_or(0, |s| s.oom_kills);
            events.push(Event::Reaped { exit, oom_kills });
        }
        for event in events {
            let actions;
            (phase, actions) = supervise::next(phase, event, Instant::now());
            for action in actions {
                match action {
                    Action::SignalCgroup(signal) => {
                        let _ = hierarchy.kill(&cgroup, signal);
                    }
                    Action::Note(why) => message = why,
                }
            }
        }
    }

    // Whatever the workload left behind in its cgroup goes with it.
    let _ = hierarchy.kill(&cgroup, Signal::SIGKILL);
    if let Some(pipe) = log_pipe {
        drain(&pipe, &mut log, &mut buf)?;
    }
    if let Some(pipe) = status_pipe
        && let StatusMessage::Failed(why) = read_status(&pipe)
    {
        message = why;
    }
    let Phase::Exited { exit, oom_killed } = phase else {
        unreachable!("the loop ends only once the workload is reaped");
    };
    let mut outcome = Outcome {
        exit_code: None,
        signal: None,
        oom_killed,
        started_ms,
        finished_ms: now_ms(),
        pid: pid.as_raw() as u32,
        cgroup: cgroup_name,
        message,
    };
    match exit {
        Exit::Code(code) => outcome.exit_code = Some(code),
        Exit::Signal(signal) => outcome.signal = Some(signal),
    }
    if let Err(e) = hierarchy.remove(&cgroup, Duration::from_secs(1)) {
        eprintln!("shim {}: {e}", dir.display());
        if outcome.message.is_empty() {
            outcome.message = format!("cgroup left behind: {e}");
        }
    }
    write_json(&dir.join(OUTCOME), &outcome)
}

/// Which of the shim's descriptors are ready.
struct Ready {
    signal: bool,
    log: bool,
    status: bool,
}

/// Polls the signalfd and the pipes still open until one is ready or `wake_at` comes.
fn wait(
    signals: &SignalFd,
    log: Option<&OwnedFd>,
    status: Option<&OwnedFd>,
    wake_at: Option<Instant>,
) -> Result<Ready, Error> {
    let timeout = match wake_at {
        Some(at) => PollTimeout::try_from(
            at.saturating_duration_since(Instant::now())
                .as_millis()
                .min(60_000) as i32
                + 1,
        )
        .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    let log_at = log.map(|p| {
        fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    let status_at = status.map(|p| {
        fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(Error::sys("poll")(e)),
    }
    let ready = |at: Option<usize>| {
        at.and_then(|i| fds[i].revents())
            .is_some_and(|r| !r.is_empty())
    };
    Ok(Ready {
        signal: ready(Some(0)),
        log: ready(log_at),
        status: ready(status_at),
    })
}

/// The workload's exit, if it has exited (never blocks).
fn reap(pid: Pid) -> Option<Exit> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Some(Exit::Signal(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Copies what is left in the log pipe, waiting at most a second for each piece: after the
/// SIGKILL of the cgroup no writer is left, but a process outside it may hold the pipe.
fn drain(pipe: &OwnedFd, log: &mut LogWriter, buf: &mut [u8]) -> Result<(), Error> {
    loop {
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll log pipe")(e)),
        }
        match nix::unistd::read(pipe.as_fd(), buf) {
            Ok(0) => return Ok(()),
            Ok(n) => log.write(&buf[..n])?,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("read log pipe")(e)),
        }
    }
}

enum StatusMessage {
    Execd,
    Waiting,
    Failed(String),
}

/// One message from the child's status pipe (blocking): see [`spawn`].
fn read_status(pipe: &OwnedFd) -> StatusMessage {
    let mut first = [0u8; 1];
    match nix::unistd::read(pipe.as_fd(), &mut first) {
        Ok(1) if first[0] == b'W' => return StatusMessage::Waiting,
        Ok(1) if first[0] == b'E' => {}
        _ => return StatusMessage::Execd,
    }
    let mut rest = [0u8; 5];
    let mut got = 0;
    while got < rest.len() {
        match nix::unistd::read(pipe.as_fd(), &mut rest[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let errno = i32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
    StatusMessage::Failed(format!(
        "{}: {}",
        spawn::stage_name(rest[0]),
        nix::errno::Errno::from_raw(errno).desc()
    ))
}

/// Tells `launch` (through stdout, its pipe) and lets go of that pipe. A launcher that is
/// gone changes nothing: the workload is supervised all the same.
fn report(report: &Report) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
}

/// Makes the FIFO at `path` unless one is there. Anything else at that path is refused: the
/// workload opens its pipes before it drops privileges, so a regular file or device there
/// must never become its stdin or stdout.
fn make_fifo(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => {
            let meta = std::fs::symlink_metadata(path).map_err(Error::io(path))?;
            if meta.file_type().is_fifo() {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{} exists and is not a FIFO",
                    path.display()
                )))
            }
        }
        Err(e) => Err(Error::sys(format!("mkfifo {}", path.display()))(e)),
    }
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
}

/// The child's setup, computed in the shim so the child only makes system calls.
fn prepare(
    spec: &LaunchSpec,
    hierarchy: &Hierarchy,
    cgroup: &CgroupPath,
    log: std::os::fd::RawFd,
) -> Result<spawn::Prepared, Error> {
    use std::os::unix::ffi::OsStrExt;
    let iso = &spec.isolation;
    let mut namespaces = 0u64;
    let mount = iso.mount || iso.pid;
    if iso.pid {
        namespaces |= libc::CLONE_NEWPID as u64;
    }
    if mount {
        namespaces |= libc::CLONE_NEWNS as u64;
    }
    if iso.uts || iso.hostname.is_some() {
        namespaces |= libc::CLONE_NEWUTS as u64;
    }
    if iso.ipc {
        namespaces |= libc::CLONE_NEWIPC as u64;
    }
    if iso.net {
        namespaces |= libc::CLONE_NEWNET as u64;
    }
    let (cgroup_dir, cgroup_procs) = match hierarchy.version() {
        cgroups::Version::V2 => {
            let dir = hierarchy.dirs(cgroup).remove(0);
            let fd = nix::fcntl::open(
                &dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(Error::sys(format!("open {}", dir.display())))?;
            (Some(fd), Vec::new())
        }
        cgroups::Version::V1 => {
            let procs = hierarchy
                .dirs(cgroup)
                .into_iter()
                .map(|d| cstring("cgroup path", d.join("cgroup.procs").as_os_str().as_bytes()))
                .collect::<Result<_, _>>()?;
            (None, procs)
        }
    };
    let mut env = spec.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    let program = if spec.command.contains('/') {
        vec![cstring("command", spec.command.as_str())?]
    } else if spec.command.is_empty() {
        return Err(Error::Invalid("the command is empty".into()));
    } else {
        env["PATH"]
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstring("command", format!("{d}/{}", spec.command)))
            .collect::<Result<_, _>>()?
    };
    let stdin = match &spec.stdin_pipe {
        Some(fifo) => spawn::Input::Fifo(cstring("stdin pipe", fifo.as_os_str().as_bytes())?),
        None => spawn::Input::File(c"/dev/null".to_owned()),
    };
    Ok(spawn::Prepared {
        namespaces,
        cgroup_dir,
        cgroup_procs,
        mount_private: mount,
        mount_proc: iso.pid,
        loopback_up: iso.net,
        hostname: iso
            .hostname
            .as_deref()
            .map(|h| cstring("hostname", h))
            .transpose()?,
        stdin,
        pipe_size: match spec.pipe_buffer_bytes {
            None => 0,
            Some(bytes) => libc::c_int::try_from(bytes).map_err(|_| {
                Error::Invalid(format!("pipe buffer of {bytes} bytes is too large"))
            })?,
        },
        stdout_fifo: spec
            .stdout_pipe
            .as_ref()
            .map(|p| cstring("stdout pipe", p.as_os_str().as_bytes()))
            .transpose()?,
        log,
        working_dir: cstring(
            "working dir",
            if spec.working_dir.is_empty() {
                "/"
            } else {
                spec.working_dir.as_str()
            },
        )?,
        uid: iso.uid,
        gid: iso.gid,
        program,
        argv: std::iter::once(spec.command.as_str())
            .chain(spec.args.iter().map(String::as_str))
            .map(|a| cstring("argument", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring("environment", format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
    })
}
