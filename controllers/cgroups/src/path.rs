//! [`CgroupPath`]: a validated path relative to Rube's node subtree. Only validation and
//! joining live here; nothing here touches the filesystem.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::Error;

/// Names a cgroup interface file could take. A directory with such a name would either fail to
/// be created (the file already exists) or be confused with the file by a reader, so they are
/// refused as segments.
const RESERVED_PREFIXES: &[&str] = &[
    "cgroup.",
    "cpu.",
    "cpuacct.",
    "cpuset.",
    "memory.",
    "pids.",
    "io.",
    "blkio.",
    "freezer.",
    "hugetlb.",
    "rdma.",
    "misc.",
    "devices.",
    "net_cls.",
    "net_prio.",
    "perf_event.",
];
const RESERVED_NAMES: &[&str] = &["tasks", "notify_on_release", "release_agent"];

/// The longest file name Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;

/// A cgroup below Rube's node subtree, such as `herd/slice`. Segments are `[a-z0-9._-]+`, never
/// `.` or `..` and never the name of a cgroup interface file; the empty path ([`CgroupPath::root`])
/// is the node subtree itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPath {
    segments: Vec<String>,
}

impl CgroupPath {
    /// Parses `herd/slice`. Leading or trailing `/` and empty segments are refused rather than
    /// tolerated, so one cgroup has one spelling.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] naming the path and the offending segment.
    pub fn new(path: &str) -> Result<CgroupPath, Error> {
        if path.is_empty() {
            return Err(Error::InvalidPath(
                "\"\": empty path (use CgroupPath::root() for the node subtree)".into(),
            ));
        }
        let mut p = CgroupPath::root();
        for segment in path.split('/') {
            check_segment(path, segment)?;
            p.segments.push(segment.to_string());
        }
        Ok(p)
    }

    /// The node subtree itself.
    pub fn root() -> CgroupPath {
        CgroupPath::default()
    }

    /// This path with one more segment.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when `segment` is not a valid single segment.
    pub fn join(&self, segment: &str) -> Result<CgroupPath, Error> {
        check_segment(segment, segment)?;
        let mut p = self.clone();
        p.segments.push(segment.to_string());
        Ok(p)
    }

    /// Whether this is the node subtree itself.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(String::as_str)
    }

    /// The path one level up; `None` for the root.
    pub fn parent(&self) -> Option<CgroupPath> {
        let mut p = self.clone();
        p.segments.pop()?;
        Some(p)
    }

    /// `base` joined with this path.
    pub fn under(&self, base: &Path) -> PathBuf {
        let mut out = base.to_path_buf();
        out.extend(&self.segments);
        out
    }
}

fn check_segment(path: &str, segment: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::InvalidPath(format!(
            "{path:?}: segment {segment:?} {why}"
        )))
    };
    if segment.is_empty() {
        return bad("is empty");
    }
    if segment == "." || segment == ".." {
        return bad("is not allowed");
    }
    if segment.len() > NAME_MAX {
        return bad("is longer than 255 bytes");
    }
    if let Some(c) = segment
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("has {c:?}; only [a-z0-9._-] are allowed"));
    }
    if RESERVED_NAMES.contains(&segment) || RESERVED_PREFIXES.iter().any(|p| segment.starts_with(p))
    {
        return bad("is the name of a cgroup interface file");
    }
    Ok(())
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

impl std::str::FromStr for CgroupPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CgroupPath::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_round_trip() {
        for p in ["herd", "herd/slice", "a.b/c_d-1", "x/y/z"] {
            assert_eq!(CgroupPath::new(p).unwrap().to_string(), p);
        }
        let p = CgroupPath::new("herd").unwrap().join("slice").unwrap();
        assert_eq!(p.to_string(), "herd/slice");
        assert_eq!(p.parent().unwrap().to_string(), "herd");
        assert!(p.parent().unwrap().parent().unwrap().is_root());
        assert_eq!(
            p.under(Path::new("/x/rube")),
            PathBuf::from("/x/rube/herd/slice")
        );
    }

    #[test]
    fn bad_segments_are_refused_with_the_segment_named() {
        for (p, why) in [
            ("", "empty path"),
            ("/herd", "segment \"\" is empty"),
            ("herd/", "segment \"\" is empty"),
            ("herd//slice", "segment \"\" is empty"),
            ("herd/../etc", "segment \"..\" is not allowed"),
            ("./herd", "segment \".\" is not allowed"),
            ("Herd", "has 'H'"),
            ("herd/sl ice", "has ' '"),
            ("herd/memory.max", "interface file"),
            ("cgroup.procs", "interface file"),
            ("tasks", "interface file"),
        ] {
            let err = CgroupPath::new(p).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::InvalidPath(_)), "{p}: {err:?}");
            assert!(msg.contains(why), "{p:?}: {msg:?} lacks {why:?}");
            assert!(msg.starts_with("invalid cgroup path"), "{msg}");
        }
        assert!(CgroupPath::new(&"a".repeat(256)).is_err());
        assert!(CgroupPath::new(&"a".repeat(255)).is_ok());
        assert!(CgroupPath::root().join("a/b").is_err());
        assert!(CgroupPath::root().join("..").is_err());
    }
}
