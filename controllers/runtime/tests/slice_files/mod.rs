//! The example controller of the tests and of `docs/controllers.md`: for every `runink.Slice`
//! labelled `node=<node>`, keep a file `<root>/<namespace>/<name>.cmd` holding its command line,
//! and say so in the slice's status. Files of slices that are gone are removed.
//!
//! `reconcile` and `simulate` (the executor's pure model) are free functions, so the fixpoint
//! property test needs neither files nor an apiserver.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use prost::Name;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use controllers::{Controller, Error, Key};
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Slice, SliceStatus};

/// What the world holds for one slice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The command file's content, if the file exists.
    pub file: Option<String>,
    /// The status this controller last wrote to the apiserver, as recorded next to the file.
    /// Recorded locally rather than read back, so the controller reconciles while the
    /// apiserver is unreachable.
    pub status: Option<SliceStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    WriteFile(String),
    RemoveFile,
    WriteStatus(SliceStatus),
}

/// The command line a slice's file holds.
pub fn command_line(slice: &Slice) -> String {
    let mut line = slice.command.clone();
    for arg in &slice.args {
        line.push(' ');
        line.push_str(arg);
    }
    line.push('\n');
    line
}

/// What to change so that the world matches `desired`. Pure.
pub fn reconcile(node: &str, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
    let mut effects = Vec::new();
    let Some(object) = desired else {
        // The slice is gone: remove its file. Its status went with it.
        if observed.file.is_some() {
            effects.push(Effect::RemoveFile);
        }
        return effects;
    };
    let generation = object.metadata.as_ref().map_or(0, |m| m.generation);
    let (file, status) = match object.spec_as::<Slice>() {
        Ok(slice) => (
            Some(command_line(&slice)),
            SliceStatus {
                phase: Phase::Pending as i32,
                node: node.to_owned(),
                message: "command file written".to_owned(),
                observed_generation: generation,
                ..Default::default()
            },
        ),
        Err(error) => (
            None,
            SliceStatus {
                phase: Phase::Failed as i32,
                node: node.to_owned(),
                message: error.to_string(),
                observed_generation: generation,
                ..Default::default()
            },
        ),
    };
    match (&file, &observed.file) {
        (Some(want), have) if have.as_ref() != Some(want) => {
            effects.push(Effect::WriteFile(want.clone()));
        }
        (None, Some(_)) => effects.push(Effect::RemoveFile),
        _ => {}
    }
    // After the file, so that the status never claims a file that is not there.
    if observed.status.as_ref() != Some(&status) {
        effects.push(Effect::WriteStatus(status));
    }
    effects
}

/// The executor as a pure function: what the world looks like after `effects`.
pub fn simulate(observed: &Observed, effects: &[Effect]) -> Observed {
    let mut world = observed.clone();
    for effect in effects {
        match effect {
            Effect::WriteFile(content) => world.file = Some(content.clone()),
            Effect::RemoveFile => world.file = None,
            Effect::WriteStatus(status) => world.status = Some(status.clone()),
        }
    }
    world
}

/// `<root>/<namespace>/<name>.cmd`.
pub fn path(root: &Path, key: &Key) -> PathBuf {
    root.join(&key.namespace).join(format!("{}.cmd", key.name))
}

/// `<root>/<namespace>/<name>.status`: the status last written, encoded.
pub fn status_path(root: &Path, key: &Key) -> PathBuf {
    root.join(&key.namespace)
        .join(format!("{}.status", key.name))
}

/// The status half of `observe`.
pub async fn observe_status(root: &Path, key: &Key) -> Result<Option<SliceStatus>, Error> {
    let path = status_path(root, key);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(prost::Message::decode(bytes.as_slice()).map_err(
            |e| Error::Io {
                path: path.clone(),
                source: std::io::Error::new(ErrorKind::InvalidData, e),
            },
        )?)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// The file half of `observe`.
pub async fn observe_file(root: &Path, key: &Key) -> Result<Option<String>, Error> {
    let path = path(root, key);
    match tokio::fs::read_to_string(&path).await {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// The file half of `execute`, for one effect; status effects are not its business.
pub async fn execute_file(root: &Path, key: &Key, effect: &Effect) -> Result<(), Error> {
    let path = path(root, key);
    match effect {
        Effect::WriteFile(content) => {
            let dir = path.parent().unwrap_or(root);
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::io(dir))?;
            // Write and rename, so a crash never leaves half a file that looks current.
            let partial = path.with_extension("cmd.partial");
            tokio::fs::write(&partial, content)
                .await
                .map_err(Error::io(&partial))?;
            tokio::fs::rename(&partial, &path)
                .await
                .map_err(Error::io(&path))
        }
        Effect::RemoveFile => {
            for path in [status_path(root, key), path] {
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(path)(e)),
                    _ => {}
                }
            }
            Ok(())
        }
        Effect::WriteStatus(_) => Ok(()),
    }
}

/// What the tests watch the controller do.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    inner: Arc<Mutex<JournalState>>,
}

#[derive(Debug, Default)]
struct JournalState {
    observed: HashMap<Key, usize>,
    executed: Vec<(Key, Effect)>,
}

impl Journal {
    /// How often `key` was observed.
    pub fn observed(&self, key: &Key) -> usize {
        let state = self.inner.lock().unwrap();
        state.observed.get(key).copied().unwrap_or(0)
    }

    /// Every effect executed, in order.
    pub fn executed(&self) -> Vec<(Key, Effect)> {
        self.inner.lock().unwrap().executed.clone()
    }
}

pub struct SliceFiles {
    pub root: PathBuf,
    pub node: String,
    pub client: Client,
    pub journal: Journal,
}

impl Controller for SliceFiles {
    type Observed = Observed;
    type Effect = Effect;
    type Error = Error;

    fn name(&self) -> &str {
        "slice-files"
    }

    fn selector(&self) -> Selector {
        Selector {
            r#type: Slice::full_name(),
            labels: format!("node={}", self.node),
            ..Default::default()
        }
    }

    async fn observe(&self, key: &Key, desired: Option<&Object>) -> Result<Observed, Error> {
        *self
            .journal
            .inner
            .lock()
            .unwrap()
            .observed
            .entry(key.clone())
            .or_default() += 1;
        let file = observe_file(&self.root, key).await?;
        let status = if desired.is_some() {
            observe_status(&self.root, key).await?
        } else {
            None
        };
        Ok(Observed { file, status })
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
        reconcile(&self.node, desired, observed)
    }

    async fn execute(&self, key: &Key, effects: Vec<Effect>) -> Result<(), Error> {
        for effect in effects {
            match &effect {
                Effect::WriteStatus(status) => {
                    self.client
                        .update_status(
                            &Slice::full_name(),
                            &key.namespace,
                            &key.name,
                            object::pack(status),
                            None,
                        )
                        .await?;
                    let path = status_path(&self.root, key);
                    if let Some(dir) = path.parent() {
                        tokio::fs::create_dir_all(dir)
                            .await
                            .map_err(Error::io(dir))?;
                    }
                    tokio::fs::write(&path, prost::Message::encode_to_vec(status))
                        .await
                        .map_err(Error::io(path))?;
                }
                file => execute_file(&self.root, key, file).await?,
            }
            let mut journal = self.journal.inner.lock().unwrap();
            journal.executed.push((key.clone(), effect));
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Key>, Error> {
        let mut keys = Vec::new();
        let mut namespaces = match tokio::fs::read_dir(&self.root).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(Error::io(&self.root)(e)),
        };
        while let Some(namespace) = namespaces
            .next_entry()
            .await
            .map_err(Error::io(&self.root))?
        {
            if !namespace.file_type().await.is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = namespace.path();
            let mut files = tokio::fs::read_dir(&dir).await.map_err(Error::io(&dir))?;
            while let Some(file) = files.next_entry().await.map_err(Error::io(&dir))? {
                let file_name = file.file_name();
                let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".cmd")) else {
                    continue;
                };
                let namespace = namespace.file_name();
                keys.push(Key::typed::<Slice>(&namespace.to_string_lossy(), name));
            }
        }
        Ok(keys)
    }
}
