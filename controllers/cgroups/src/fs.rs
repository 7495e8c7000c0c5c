//! Reading and writing cgroup interface files, with errors that carry the path and the value.
//! Only plain file operations live here; which file means what is the v1/v2 modules' business.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

pub(crate) fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` in one `write(2)`: cgroupfs acts on each write call, so a value must never be
/// split. The file is never created (a missing interface file is an error, not something to
/// make), and is truncated as a shell's `echo v > file` does: cgroupfs ignores that, a plain file
/// in a test then reads back exactly what was written.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| {
            let n = f.write(value.as_bytes())?;
            if n == value.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    ErrorKind::WriteZero,
                    format!("short write of {n} bytes"),
                ))
            }
        });
    tracing::trace!(path = %path.display(), value, ok = result.is_ok(), "cgroup write");
    result.map_err(|source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

/// The file's contents, or `None` when it does not exist (a controller that is not enabled, or a
/// kernel too old for the file).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

pub(crate) fn parse<T: FromStr>(path: &Path, value: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| Error::Parse {
        path: path.to_path_buf(),
        value: value.trim().to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, Error> {
    parse(path, &read(path)?)
}

/// The value of `key` in a flat-keyed file (`key value` per line: `cpu.stat`, `memory.events`,
/// `memory.oom_control`); `None` when the key is absent.
pub(crate) fn keyed(path: &Path, contents: &str, key: &str) -> Result<Option<u64>, Error> {
    for line in contents.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return parse(path, value).map(Some);
        }
    }
    Ok(None)
}

/// `dir` and every directory below it, parents before children.
pub(crate) fn walk(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        i += 1;
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // A cgroup removed while we walk (a concurrent remove) has no children left.
            Err(e) if e.kind() == ErrorKind::NotFound && i > 1 => continue,
            Err(e) => return Err(io_err(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&d, e))?;
            if entry
                .file_type()
                .map_err(|e| io_err(&entry.path(), e))?
                .is_dir()
            {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// The pids in `cgroup.procs` of `dir` and every cgroup below it.
pub(crate) fn procs_recursive(dir: &Path, out: &mut BTreeSet<u32>) -> Result<(), Error> {
    for d in walk(dir)? {
        let file = d.join("cgroup.procs");
        let Some(contents) = read_optional(&file)? else {
            continue;
        };
        for line in contents.lines().filter(|l| !l.trim().is_empty()) {
            out.insert(parse(&file, line)?);
        }
    }
    Ok(())
}

/// Removes `dir` and the cgroups below it, deepest first; a directory already gone is fine.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Ok(());
    }
    let mut dirs = walk(dir)?;
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        match std::fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&d, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse_and_bad_values_name_the_file() {
        let p = Path::new("/x/cpu.stat");
        let s = "usage_usec 1234\nuser_usec 1000\nnr_throttled 7\nthrottled_usec 99\n";
        assert_eq!(keyed(p, s, "usage_usec").unwrap(), Some(1234));
        assert_eq!(keyed(p, s, "nr_throttled").unwrap(), Some(7));
        assert_eq!(keyed(p, s, "nr_periods").unwrap(), None);
        let err = keyed(p, "usage_usec lots\n", "usage_usec").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/x/cpu.stat") && msg.contains("\"lots\""),
            "{msg}"
        );
    }
}
