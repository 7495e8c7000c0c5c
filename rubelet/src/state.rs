//! The rubelet's local state store: `<state-dir>/rubelet.db`, sqlite.
//!
//! It holds, for every controller, a read-only copy of the desired objects its reflector has
//! seen and the revision they are consistent at (a [`controllers::Mirror`]), so that after a
//! restart the rubelet reconciles from the copy before the apiserver answers and resumes its
//! watches from where they were. What each controller observed of the world lives with the
//! world it describes (a slice's shim records in the slice's directory, a unit's last status in
//! the unit controller's directory), not here.
//!
//! Nothing here talks to the apiserver; the copy is only ever written from what a reflector
//! applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use controllers::watcher::Change;
use controllers::{BoxError, Key, Mirror};
use prost::Message;
use rubeapi::rube::Object;
use rusqlite::{Connection, OptionalExtension, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS desired (
    controller TEXT NOT NULL,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    object BLOB NOT NULL,
    PRIMARY KEY (controller, type, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    controller TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {path}: stored object of {controller} does not decode: {source}")]
    Decode {
        path: PathBuf,
        controller: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// The open state store; clones share one connection.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl StateStore {
    /// Opens (creating) `<dir>/rubelet.db`.
    ///
    /// # Errors
    /// When the file cannot be opened or the schema cannot be written.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let path = dir.join("rubelet.db");
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sqlite)?;
        // WAL with NORMAL sync: a crash may lose the last saves, which only makes the copy lag
        // (the resumed watch replays them); it can never tear it.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(StateStore {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The mirror of controller `name`.
    pub fn mirror(&self, controller: &str) -> Arc<dyn Mirror> {
        Arc::new(SqliteMirror {
            store: self.clone(),
            controller: controller.to_owned(),
        })
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn load(&self, controller: &str) -> Result<Option<(Vec<Object>, u64)>, StateError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let revision: Option<i64> = conn
            .query_row(
                "SELECT revision FROM cursors WHERE controller = ?1",
                [controller],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sqlite())?;
        let Some(revision) = revision else {
            return Ok(None);
        };
        let mut statement = conn
            .prepare("SELECT object FROM desired WHERE controller = ?1")
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([controller], |row| row.get::<_, Vec<u8>>(0))
            .map_err(self.sqlite())?;
        let mut objects = Vec::new();
        for row in rows {
            let bytes = row.map_err(self.sqlite())?;
            objects.push(Object::decode(bytes.as_slice()).map_err(|source| {
                StateError::Decode {
                    path: self.path.clone(),
                    controller: controller.to_owned(),
                    source,
                }
            })?);
        }
        Ok(Some((objects, revision as u64)))
    }

    fn save(&self, controller: &str, change: &Change) -> Result<(), StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction().map_err(self.sqlite())?;
        let put = |tx: &rusqlite::Transaction<'_>, object: &Object| {
            let key = Key::of(object);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO desired (controller, type, namespace, name, object)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                controller,
                key.type_name,
                key.namespace,
                key.name,
                object.encode_to_vec()
            ])
            .map(drop)
        };
        let revision = match change {
            Change::Replace { objects, revision } => {
                tx.execute("DELETE FROM desired WHERE controller = ?1", [controller])
                    .map_err(self.sqlite())?;
                for object in objects {
                    put(&tx, object).map_err(self.sqlite())?;
                }
                *revision
            }
            Change::Put(object) => {
                put(&tx, object).map_err(self.sqlite())?;
                controllers::mirror::revision_of(object)
            }
            Change::Delete(object) => {
                let key = Key::of(object);
                tx.prepare_cached(
                    "DELETE FROM desired WHERE controller = ?1 AND type = ?2 AND namespace = ?3
                     AND name = ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![controller, key.type_name, key.namespace, key.name])
                })
                .map_err(self.sqlite())?;
                controllers::mirror::revision_of(object)
            }
            Change::Bookmark(revision) => *revision,
        };
        // The cursor never moves back (a replace after a compaction may list at a revision
        // below a bookmark seen before; the cache keeps the larger one too).
        let replace = matches!(change, Change::Replace { .. });
        tx.execute(
            "INSERT INTO cursors (controller, revision) VALUES (?1, ?2)
             ON CONFLICT (controller) DO UPDATE SET revision =
                 CASE WHEN ?3 THEN excluded.revision ELSE max(revision, excluded.revision) END",
            params![controller, revision as i64, replace],
        )
        .map_err(self.sqlite())?;
        tx.commit().map_err(self.sqlite())
    }
}

#[derive(Debug)]
struct SqliteMirror {
    store: StateStore,
    controller: String,
}

impl Mirror for SqliteMirror {
    fn load(&self) -> Result<Option<(Vec<Object>, u64)>, BoxError> {
        Ok(self.store.load(&self.controller)?)
    }

    fn save(&self, change: &Change) -> Result<(), BoxError> {
        Ok(self.store.save(&self.controller, change)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::runink::Slice;

    fn slice(name: &str, revision: u64, command: &str) -> Object {
        rubeapi::testing::slice("herd", name)
            .command(command)
            .revision(revision)
            .build()
    }

    fn names(loaded: &Option<(Vec<Object>, u64)>) -> (Vec<String>, u64) {
        let (objects, revision) = loaded.as_ref().unwrap();
        let mut names: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}@{}",
                    o.metadata.as_ref().unwrap().name,
                    o.metadata.as_ref().unwrap().revision
                )
            })
            .collect();
        names.sort();
        (names, *revision)
    }

    #[test]
    fn a_mirror_survives_reopening_and_keeps_controllers_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let slices = store.mirror("slices");
        assert!(slices.load().unwrap().is_none(), "nothing saved yet");
        slices
            .save(&Change::Replace {
                objects: vec![slice("a", 2, "x"), slice("b", 3, "y")],
                revision: 5,
            })
            .unwrap();
        slices.save(&Change::Put(slice("a", 6, "x2"))).unwrap();
        slices.save(&Change::Delete(slice("b", 7, "y"))).unwrap();
        slices.save(&Change::Bookmark(9)).unwrap();
        slices.save(&Change::Bookmark(8)).unwrap();
        store
            .mirror("units")
            .save(&Change::Replace {
                objects: vec![],
                revision: 4,
            })
            .unwrap();
        drop((slices, store));

        let store = StateStore::open(dir.path()).unwrap();
        let loaded = store.mirror("slices").load().unwrap();
        assert_eq!(names(&loaded), (vec!["a@6".to_owned()], 9));
        let (objects, _) = loaded.unwrap();
        let spec: Slice = rubeapi::object::ObjectExt::spec_as(&objects[0]).unwrap();
        assert_eq!(spec.command, "x2");
        assert_eq!(names(&store.mirror("units").load().unwrap()), (vec![], 4));
        // A relist after a compaction replaces everything, revision included.
        store
            .mirror("slices")
            .save(&Change::Replace {
                objects: vec![slice("c", 3, "z")],
                revision: 3,
            })
            .unwrap();
        assert_eq!(
            names(&store.mirror("slices").load().unwrap()),
            (vec!["c@3".to_owned()], 3)
        );
    }
}
