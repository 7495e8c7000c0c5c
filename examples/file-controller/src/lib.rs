//! An example of a controller a user writes for a custom type: for every `example.files.File`
//! bound to this node (label `node=<name>`), keep the file with its content and mode under a
//! root directory, and report it in the object's status. Files of deleted objects are removed.
//!
//! `reconcile` and `simulate` (a model of the executor) are pure functions; `FileController`
//! adds the I/O.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use controllers::{Controller, Error, Key};
use prost::Name;
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Selector};
use sha2::{Digest, Sha256};

/// Types generated from `examples/custom/files.proto`.
#[allow(clippy::all)]
pub mod files {
    include!(concat!(env!("OUT_DIR"), "/example.files.rs"));
}

use files::{File, FileStatus};

/// The `rube.Type` object that registers it.
pub const TYPE_NAME: &str = "example.files";
/// `examples/custom/files.proto`, compiled.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/files_descriptor.bin"));

/// What this node holds for one object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// Where the file of this object was written, from the controller's own record.
    pub recorded: Option<PathBuf>,
    /// The file at the desired path: content and permission bits.
    pub file: Option<(Vec<u8>, u32)>,
    /// The status the apiserver holds now.
    pub status: Option<FileStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write the file (atomically) and record its path.
    Write {
        path: PathBuf,
        content: Vec<u8>,
        mode: u32,
    },
    /// Remove the recorded file and the record.
    Remove {
        path: PathBuf,
    },
    Status(FileStatus),
}

/// The file's place under `root`: the spec's absolute path, refused if it climbs out.
pub fn place(root: &Path, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path.trim_start_matches('/'));
    if path.is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("path '{path}' must be absolute and free of '..'"));
    }
    Ok(root.join(relative))
}

fn sha256(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What to change so the node matches `desired`. Pure: `root` is only joined, never read.
pub fn reconcile(root: &Path, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
    let Some(object) = desired else {
        return observed
            .recorded
            .iter()
            .map(|path| Effect::Remove { path: path.clone() })
            .collect();
    };
    let generation = object.metadata.as_ref().map_or(0, |m| m.generation);
    let mut effects = Vec::new();
    let status = match object
        .spec_as::<File>()
        .map_err(|e| e.to_string())
        .and_then(|f| Ok((place(root, &f.path)?, f)))
    {
        Ok((path, spec)) => {
            // A moved file: the old one goes first.
            if let Some(old) = observed.recorded.as_ref().filter(|old| **old != path) {
                effects.push(Effect::Remove { path: old.clone() });
            }
            let mode = if spec.mode == 0 {
                0o644
            } else {
                spec.mode & 0o7777
            };
            let want = (spec.content.clone().into_bytes(), mode);
            if observed.file.as_ref() != Some(&want) || observed.recorded.as_ref() != Some(&path) {
                effects.push(Effect::Write {
                    path,
                    content: want.0.clone(),
                    mode,
                });
            }
            FileStatus {
                written: true,
                sha256: sha256(&want.0),
                observed_generation: generation,
            }
        }
        Err(_) => FileStatus {
            written: false,
            sha256: String::new(),
            observed_generation: generation,
        },
    };
    // After the file, so the status never claims what is not there.
    if observed.status.as_ref() != Some(&status) {
        effects.push(Effect::Status(status));
    }
    effects
}

/// The executor as a pure model, for the fixpoint test.
pub fn simulate(observed: &Observed, effects: &[Effect]) -> Observed {
    let mut world = observed.clone();
    for effect in effects {
        match effect {
            Effect::Write {
                path,
                content,
                mode,
            } => {
                world.recorded = Some(path.clone());
                world.file = Some((content.clone(), *mode));
            }
            Effect::Remove { .. } => {
                world.recorded = None;
                world.file = None;
            }
            Effect::Status(status) => world.status = Some(status.clone()),
        }
    }
    world
}

/// The controller: the node's name, where files go, and the apiserver.
pub struct FileController {
    pub node: String,
    pub root: PathBuf,
    pub client: Client,
}

impl FileController {
    /// `<root>/.rube/<namespace>/<name>`: which path this object's file was written to.
    fn record(&self, key: &Key) -> PathBuf {
        self.root.join(".rube").join(&key.namespace).join(&key.name)
    }
}

async fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match tokio::fs::read(path).await {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

impl Controller for FileController {
    type Observed = Observed;
    type Effect = Effect;
    type Error = Error;

    fn name(&self) -> &str {
        "files"
    }

    fn selector(&self) -> Selector {
        Selector::of::<File>().label("node", &self.node)
    }

    async fn observe(&self, key: &Key, desired: Option<&Object>) -> Result<Observed, Error> {
        let recorded = read_optional(&self.record(key))
            .await?
            .map(|p| PathBuf::from(String::from_utf8_lossy(&p).into_owned()));
        let path = match desired.map(|o| o.spec_as::<File>()) {
            Some(Ok(spec)) => place(&self.root, &spec.path).ok(),
            _ => None,
        };
        let file = match path {
            Some(path) => match read_optional(&path).await? {
                Some(content) => {
                    let mode = tokio::fs::metadata(&path)
                        .await
                        .map_err(Error::io(&path))?
                        .permissions()
                        .mode()
                        & 0o7777;
                    Some((content, mode))
                }
                None => None,
            },
            None => None,
        };
        // The status this controller wrote may be newer than the cached object: ask.
        let status = if desired.is_some() {
            match self
                .client
                .get(&File::full_name(), &key.namespace, &key.name)
                .await
            {
                Ok(object) => object.status_as::<FileStatus>()?,
                Err(rubeapi::Error::NotFound(_)) => None,
                Err(error) => return Err(error.into()),
            }
        } else {
            None
        };
        Ok(Observed {
            recorded,
            file,
            status,
        })
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
        reconcile(&self.root, desired, observed)
    }

    async fn execute(&self, key: &Key, effects: Vec<Effect>) -> Result<(), Error> {
        let record = self.record(key);
        for effect in effects {
            match effect {
                Effect::Write {
                    path,
                    content,
                    mode,
                } => {
                    for dir in [path.parent(), record.parent()].into_iter().flatten() {
                        tokio::fs::create_dir_all(dir)
                            .await
                            .map_err(Error::io(dir))?;
                    }
                    // Write, set the mode, rename: a crash never leaves half a file.
                    let partial = path.with_extension("rube-partial");
                    tokio::fs::write(&partial, &content)
                        .await
                        .map_err(Error::io(&partial))?;
                    tokio::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
                        .await
                        .map_err(Error::io(&partial))?;
                    tokio::fs::rename(&partial, &path)
                        .await
                        .map_err(Error::io(&path))?;
                    tokio::fs::write(&record, path.to_string_lossy().as_bytes())
                        .await
                        .map_err(Error::io(&record))?;
                }
                Effect::Remove { path } => {
                    for file in [&path, &record] {
                        match tokio::fs::remove_file(file).await {
                            Err(e) if e.kind() != ErrorKind::NotFound => {
                                return Err(Error::io(file)(e));
                            }
                            _ => {}
                        }
                    }
                }
                Effect::Status(status) => {
                    self.client
                        .update_status(
                            &File::full_name(),
                            &key.namespace,
                            &key.name,
                            object::pack(&status),
                            None,
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Every object this node wrote a file for, so deletions made while it was down are
    /// cleaned up at start.
    async fn inventory(&self) -> Result<Vec<Key>, Error> {
        let base = self.root.join(".rube");
        controllers::inventory::namespaced_entries(&base, &File::full_name())
            .await
            .map_err(|(path, e)| Error::io(path)(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, generation: u64) -> Object {
        let mut o = object::new(
            "ns",
            "f",
            &File {
                path: path.into(),
                content: content.into(),
                mode: 0o600,
            },
        );
        o.metadata.as_mut().unwrap().generation = generation;
        o
    }

    #[test]
    fn reconcile_reaches_a_fixpoint_from_any_start() {
        let root = Path::new("/srv");
        let starts = [
            Observed::default(),
            Observed {
                recorded: Some("/srv/old".into()),
                file: None,
                status: None,
            },
            Observed {
                recorded: Some("/srv/etc/motd".into()),
                file: Some((b"stale".to_vec(), 0o644)),
                status: Some(FileStatus::default()),
            },
        ];
        for desired in [
            Some(file("/etc/motd", "hi", 1)),
            Some(file("../escape", "x", 2)),
            None,
        ] {
            for start in &starts {
                let effects = reconcile(root, desired.as_ref(), start);
                let after = simulate(start, &effects);
                assert_eq!(
                    reconcile(root, desired.as_ref(), &after),
                    vec![],
                    "from {start:?} to {desired:?}"
                );
            }
        }
    }

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(
            place(Path::new("/srv"), "/etc/motd").unwrap(),
            PathBuf::from("/srv/etc/motd")
        );
        assert!(place(Path::new("/srv"), "/etc/../../x").is_err());
        assert!(place(Path::new("/srv"), "").is_err());
    }

    #[test]
    fn a_deleted_object_removes_its_recorded_file_only() {
        let observed = Observed {
            recorded: Some("/srv/a".into()),
            ..Default::default()
        };
        assert_eq!(
            reconcile(Path::new("/srv"), None, &observed),
            vec![Effect::Remove {
                path: "/srv/a".into()
            }]
        );
        assert_eq!(
            reconcile(Path::new("/srv"), None, &Observed::default()),
            vec![]
        );
    }
}
