//! Finding the process's own cgroup in each hierarchy from `/proc/self/mountinfo` and
//! `/proc/self/cgroup`. The parsers are pure functions over the files' text so tests feed them
//! samples; [`detect_from`] decides v1 or v2. Nothing here creates or writes a cgroup.

use std::path::{Path, PathBuf};

use crate::{Error, Hierarchy, Subsystem, V1, V2};

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The directory of the hierarchy that is mounted (field 4), `/` unless a namespace or bind
    /// mount exposes only part of it.
    pub root: String,
    pub mount_point: PathBuf,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Super options: for v1 they name the controllers (`rw,cpu,cpuacct`).
    pub options: Vec<String>,
}

/// cgroup mounts in mountinfo text.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Fields: id parent major:minor root mount_point options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let fstype = right[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push(Mount {
            root: unescape(left[3]),
            mount_point: PathBuf::from(unescape(left[4])),
            fstype: fstype.to_string(),
            options: right[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: `id:controllers:path`; v2 is `0::path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under a mount of the
/// hierarchy whose root is `mount_root`.
fn cgroup_dir(mount: &Mount, path: &str) -> PathBuf {
    let rel = if mount.root == "/" {
        path
    } else {
        // A mount of part of the hierarchy: the path is shown from the hierarchy's root, so the
        // mounted part is cut off. Inside a cgroup namespace the path is already relative.
        path.strip_prefix(mount.root.as_str()).unwrap_or(path)
    };
    let mut dir = mount.mount_point.clone();
    dir.extend(rel.split('/').filter(|s| !s.is_empty()));
    dir
}

/// Decides the hierarchy from mountinfo and /proc/self/cgroup text. v1 wins whenever a v1
/// hierarchy carries one of the controllers Rube limits (memory, pids, cpu): on a hybrid machine
/// the cgroup2 mount then holds no such controller.
pub(crate) fn detect_from(
    mountinfo: &str,
    proc_cgroup: &str,
    subtree: &Path,
) -> Result<Hierarchy, Error> {
    let mounts = parse_mountinfo(mountinfo);
    let members = parse_proc_cgroup(proc_cgroup);
    let mut roots = Vec::new();
    for c in Subsystem::ALL {
        let name = c.name();
        let Some(mount) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == name))
        else {
            continue;
        };
        let Some(member) = members
            .iter()
            .find(|m| m.controllers.iter().any(|o| o == name))
        else {
            continue;
        };
        roots.push((c, cgroup_dir(mount, &member.path).join(subtree)));
    }
    if roots
        .iter()
        .any(|(c, _)| matches!(c, Subsystem::Memory | Subsystem::Pids | Subsystem::Cpu))
    {
        return Ok(Hierarchy::V1(V1::new(roots)));
    }
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2");
    let member = members
        .iter()
        .find(|m| m.controllers.is_empty() && !m.path.is_empty());
    match (mount, member) {
        (Some(mount), Some(member)) => {
            let own = cgroup_dir(mount, &member.path);
            Ok(Hierarchy::V2(V2::new(own.join(subtree))))
        }
        _ => Err(Error::NotMounted(
            "no cgroup v1 hierarchy with memory, pids or cpu and no cgroup2 mount in /proc/self/mountinfo".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    // This machine's files: hybrid, v1 controllers, cgroup2 with only hugetlb.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/c142
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_machine_is_v1_rooted_at_the_own_cgroup_of_each_hierarchy() {
        let h = detect_from(HYBRID_MOUNTINFO, HYBRID_CGROUP, Path::new("rube")).unwrap();
        assert_eq!(h.version(), Version::V1);
        let Hierarchy::V1(v1) = &h else {
            unreachable!()
        };
        assert_eq!(
            v1.roots(),
            &[
                (
                    Subsystem::Memory,
                    PathBuf::from("/sys/fs/cgroup/memory/process_api/c142/rube")
                ),
                (Subsystem::Pids, PathBuf::from("/sys/fs/cgroup/pids/rube")),
                (Subsystem::Cpu, PathBuf::from("/sys/fs/cgroup/cpu/rube")),
                (
                    Subsystem::Cpuacct,
                    PathBuf::from("/sys/fs/cgroup/cpuacct/rube")
                ),
                (
                    Subsystem::Freezer,
                    PathBuf::from("/sys/fs/cgroup/freezer/rube")
                ),
            ]
        );
    }

    #[test]
    fn comounted_cpu_and_cpuacct_share_one_directory() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let cg = "5:cpu,cpuacct:/user.slice\n3:memory:/user.slice/x\n";
        let h = detect_from(mi, cg, Path::new("rube")).unwrap();
        let dirs = h.dirs(&crate::CgroupPath::new("h/s").unwrap());
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/user.slice/x/rube/h/s"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice/rube/h/s"),
            ]
        );
    }

    #[test]
    fn pure_v2_uses_the_own_cgroup_and_unescapes_mount_points() {
        let mi = "29 23 0:26 / /sys/fs/cgroup\\040x rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = "0::/system.slice/rubelet.service\n";
        let h = detect_from(mi, cg, Path::new("rube")).unwrap();
        assert_eq!(h.version(), Version::V2);
        assert_eq!(
            h.dirs(&crate::CgroupPath::root()),
            vec![PathBuf::from(
                "/sys/fs/cgroup x/system.slice/rubelet.service/rube"
            )]
        );
    }

    #[test]
    fn a_partial_mount_strips_its_root() {
        let mi = "29 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = "0::/kubepods/pod1/c1\n";
        let h = detect_from(mi, cg, Path::new("rube")).unwrap();
        assert_eq!(
            h.dirs(&crate::CgroupPath::root()),
            vec![PathBuf::from("/sys/fs/cgroup/c1/rube")]
        );
    }

    #[test]
    fn no_cgroup_mounts_is_not_mounted() {
        let err = detect_from(
            "1 0 0:1 / / rw - ext4 /dev/sda rw\n",
            "0::/\n",
            Path::new("rube"),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotMounted(_)), "{err:?}");
    }
}
