//! Inventories read from the world: helpers for [`crate::Controller::inventory`].

use std::path::{Path, PathBuf};

use crate::Key;

/// Keys of a `<base>/<namespace>/<name>` directory layout, one per entry two levels down, all of
/// type `type_name`: what a node controller that keeps a directory (or file) per object made,
/// whether or not the apiserver still has the objects. A missing `base` has no keys.
///
/// # Errors
/// The directory that could not be read, and why.
pub async fn namespaced_entries(
    base: &Path,
    type_name: &str,
) -> Result<Vec<Key>, (PathBuf, std::io::Error)> {
    let mut keys = Vec::new();
    let Ok(mut namespaces) = tokio::fs::read_dir(base).await else {
        return Ok(keys);
    };
    let at = |path: &Path| {
        let path = path.to_owned();
        move |e| (path, e)
    };
    while let Some(ns) = namespaces.next_entry().await.map_err(at(base))? {
        let dir = ns.path();
        let mut names = tokio::fs::read_dir(&dir).await.map_err(at(&dir))?;
        while let Some(name) = names.next_entry().await.map_err(at(&dir))? {
            keys.push(Key::new(
                type_name,
                &ns.file_name().to_string_lossy(),
                &name.file_name().to_string_lossy(),
            ));
        }
    }
    Ok(keys)
}
