//! [`Report`]: the one line the detached shim writes to its launcher (`shim::launch`) on the
//! pipe that was its stdout, before it lets go of it. One word, then what it carries:
//!
//! ```text
//! ok <workload pid> <shim pid>
//! exec <why the workload could not start>
//! err <why the shim gave up before the workload existed>
//! ```

use std::fmt;
use std::str::FromStr;

/// What the shim tells its launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The workload exec'd (or waits for its FIFOs) and is supervised.
    Started { pid: u32, shim_pid: u32 },
    /// The workload could not be started; its outcome is recorded.
    ExecFailed(String),
    /// The shim gave up before the workload existed (a cgroup it could not make, a lock
    /// another shim holds).
    GaveUp(String),
}

/// A line that is no [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a shim report")]
pub struct NotAReport(pub String);

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: a reason never carries a newline into the next report.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Report::Started { pid, shim_pid } => write!(f, "ok {pid} {shim_pid}"),
            Report::ExecFailed(why) => write!(f, "exec {}", one_line(why)),
            Report::GaveUp(why) => write!(f, "err {}", one_line(why)),
        }
    }
}

impl FromStr for Report {
    type Err = NotAReport;

    fn from_str(line: &str) -> Result<Report, NotAReport> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ok" => {
                let mut numbers = rest.split(' ').map(str::parse::<u32>);
                match (numbers.next(), numbers.next(), numbers.next()) {
                    (Some(Ok(pid)), Some(Ok(shim_pid)), None) => {
                        Ok(Report::Started { pid, shim_pid })
                    }
                    _ => Err(NotAReport(line.to_owned())),
                }
            }
            "exec" => Ok(Report::ExecFailed(rest.to_owned())),
            "err" => Ok(Report::GaveUp(rest.to_owned())),
            _ => Err(NotAReport(line.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_reads_back_as_itself() {
        for report in [
            Report::Started {
                pid: 4242,
                shim_pid: 17,
            },
            Report::ExecFailed("execve: No such file or directory".into()),
            Report::GaveUp("lock shim.lock (another shim runs here): EAGAIN".into()),
            Report::GaveUp(String::new()),
        ] {
            assert_eq!(report.to_string().parse::<Report>(), Ok(report));
        }
    }

    #[test]
    fn a_reason_stays_on_one_line() {
        let report = Report::GaveUp("first\nsecond".into());
        assert_eq!(report.to_string(), "err first second");
    }

    #[test]
    fn anything_else_is_no_report() {
        for line in [
            "",
            "ok",
            "ok 1",
            "ok 1 x",
            "ok 1 2 3",
            "OK 1 2",
            "started 1 2",
        ] {
            assert_eq!(
                line.parse::<Report>(),
                Err(NotAReport(line.to_owned())),
                "{line:?}"
            );
        }
    }
}
