//! [`sweep`]: at start, the slice cgroups that no slice dir accounts for are killed and removed.

use std::path::Path;
use std::time::Duration;

use cgroups::{CgroupPath, Hierarchy};

use super::executor::slice_dir;
use crate::Error;

/// At start: removes (killing what runs in them) the slice cgroups `<herd>/<slice>` under the
/// node subtree that have no slice dir in `state_dir`. Returns the removed paths.
///
/// # Errors
/// [`Error::Cgroup`] when a cgroup cannot be listed or removed.
pub fn sweep(
    hierarchy: &Hierarchy,
    state_dir: &Path,
    grace: Duration,
) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    let root = CgroupPath::root();
    if !hierarchy.exists(&root) {
        return Ok(removed);
    }
    for herd in hierarchy.children(&root)? {
        let herd_path = root.join(&herd)?;
        for leaf in hierarchy.children(&herd_path)? {
            if slice_dir(state_dir, &herd, &leaf).is_dir() {
                continue;
            }
            let path = herd_path.join(&leaf)?;
            hierarchy.remove(&path, grace)?;
            removed.push(path.to_string());
        }
    }
    Ok(removed)
}
