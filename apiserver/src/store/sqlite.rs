//! The embedded default backend: one sqlite file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only writing connection. It takes every command waiting in its
//! queue, runs them in one transaction (each under a savepoint, so one failure rolls back only
//! its own command), commits once — one fsync for the whole group — then publishes the events
//! to the watch hub and answers the callers. Reads run on a small pool of read-only connections
//! and see the last committed state.
//!
//! Tables: `objects` (the current state), `events` (the history watches replay; compaction
//! deletes its head), `meta` (current and compacted revision). The revision in `meta` is written
//! in the same transaction as the changes it counts, so it never goes backwards, even after a
//! crash.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use prost::{Message, Name};
use prost_types::{Any, Timestamp};
use rubeapi::Registry;
use rubeapi::rube::{Lease, Metadata, Object, Outcome};
use rubeapi::selector::Filter;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::core::{self, Plan, Stamp};
use super::hub::{self, History, Hub, Page, WatchOptions};
use super::{
    Compaction, Event, EventKind, Expect, Key, Listing, Op, Revision, Store, WatchStream, Written,
};
use crate::Error;

/// The database file inside the data dir.
pub const DB_FILE: &str = "rube.db";
const LOCK_FILE: &str = "LOCK";
/// Most commands committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Events removed per purge step after a compaction, so writes are never held up for long.
const PURGE_CHUNK: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1), ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS objects (
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (type, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    prev_labels BLOB
);
";

/// Finds the earlier puts that a lease renewal supersedes (`core::supersedes_history`). A
/// partial index needs its kind as a literal, so the statement is built from the type's name.
fn lease_events_index() -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS lease_events ON events (namespace, name) WHERE type = '{}';",
        Lease::full_name()
    )
}

/// Deletes the puts a lease renewal supersedes; the literal kind lets sqlite use the index.
static SUPERSEDED_PUTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM events WHERE type = '{}' AND namespace = ?1 AND name = ?2
         AND kind = 0 AND revision < ?3",
        Lease::full_name()
    )
});

/// Settings of the sqlite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub watch: WatchOptions,
    /// Read connections at most.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            watch: WatchOptions::default(),
            readers: 4,
        }
    }
}

/// The sqlite `Store`.
pub struct SqliteStore {
    commands: mpsc::UnboundedSender<Command>,
    history: Arc<Readers>,
    hub: Arc<Hub>,
    options: SqliteOptions,
    cancel: CancellationToken,
    writer: Option<thread::JoinHandle<()>>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.history.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, which one process at a time may hold.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// `Unavailable` when the directory cannot be created or locked, or the database opened.
    pub fn open(
        dir: &Path,
        registry: Registry,
        options: SqliteOptions,
    ) -> Result<SqliteStore, Error> {
        fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;",
        )?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&lease_events_index())?;
        let revision = read_meta(&conn, "revision")?;
        let compacted = read_meta(&conn, "compacted")?;
        let hub = Arc::new(Hub::new(revision, options.watch.buffer));
        let (commands, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            conn,
            registry,
            hub: hub.clone(),
            revision,
            compacted,
            purged_to: 0,
        };
        let writer = thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let cancel = CancellationToken::new();
        hub::spawn_progress_ticker(hub.clone(), options.watch, cancel.clone());
        Ok(SqliteStore {
            commands,
            history: Arc::new(Readers::new(path, options.readers)),
            hub,
            options,
            cancel,
            writer: Some(writer),
            _lock: lock,
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.history.path
    }

    /// Live watchers on this store.
    pub fn watchers(&self) -> usize {
        self.hub.subscribers()
    }

    /// How many times a slow watcher fell behind and was sent back to reading history.
    pub fn demoted_watchers(&self) -> u64 {
        self.hub.demoted()
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        response
            .await
            .map_err(|_| Error::Unavailable("the writer stopped".into()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Closing the queue lets the writer finish what it has and stop.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, Error> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        Error::Unavailable(format!(
            "data dir {} is in use by another process (lock {}: {errno})",
            dir.display(),
            path.display()
        ))
    })
}

fn read_meta(conn: &Connection, key: &str) -> Result<u64, Error> {
    let value: i64 = conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
        row.get(0)
    })?;
    Ok(value as u64)
}

impl Store for SqliteStore {
    async fn transact(&self, ops: Vec<Op>) -> Result<Vec<Written>, Error> {
        self.send(|reply| Command::Apply { ops, reply }).await
    }

    async fn get(&self, key: Key) -> Result<Object, Error> {
        self.history
            .with(move |conn| load(conn, &key)?.ok_or(Error::NotFound { key }))
            .await
    }

    async fn list(&self, filter: Filter) -> Result<Listing, Error> {
        self.history
            .with(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let mut statement = tx.prepare_cached(
                    "SELECT data FROM objects WHERE (?1 = '' OR type = ?1) AND (?2 = '' OR namespace = ?2)
                     AND (?3 = '' OR name = ?3) ORDER BY type, namespace, name",
                )?;
                let mut rows = statement.query(params![filter.type_name, filter.namespace, filter.name])?;
                let mut objects = Vec::new();
                while let Some(row) = rows.next()? {
                    let data: Vec<u8> = row.get(0)?;
                    let object = Object::decode(data.as_slice())?;
                    if filter.matches(&object) {
                        objects.push(object);
                    }
                }
                drop(rows);
                drop(statement);
                let revision = read_meta(&tx, "revision")?;
                tx.commit()?;
                Ok(Listing { objects, revision })
            })
            .await
    }

    async fn delete(&self, key: Key, expect: Option<Expect>) -> Result<Written, Error> {
        self.send(|reply| Command::Delete { key, expect, reply })
            .await
    }

    async fn update_status(
        &self,
        key: Key,
        status: Any,
        expect: Option<Expect>,
    ) -> Result<Written, Error> {
        self.send(|reply| Command::UpdateStatus {
            key,
            status,
            expect,
            reply,
        })
        .await
    }

    async fn watch(
        &self,
        filter: Filter,
        from: Option<Revision>,
        cancel: CancellationToken,
    ) -> Result<WatchStream, Error> {
        if from.is_some() {
            core::check_resume(from, self.revision().await?.compacted)?;
        }
        Ok(hub::watch(
            self.history.clone(),
            self.hub.clone(),
            self.options.watch,
            filter,
            from,
            cancel,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<Compaction, Error> {
        self.send(|reply| Command::Compact { revision, reply })
            .await
    }

    async fn revision(&self) -> Result<Compaction, Error> {
        self.history
            .with(|conn| {
                let tx = conn.unchecked_transaction()?;
                let bounds = Compaction {
                    revision: read_meta(&tx, "revision")?,
                    compacted: read_meta(&tx, "compacted")?,
                };
                tx.commit()?;
                Ok(bounds)
            })
            .await
    }
}

fn load(conn: &Connection, key: &Key) -> Result<Option<Object>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT data FROM objects WHERE type = ?1 AND namespace = ?2 AND name = ?3",
    )?;
    let data: Option<Vec<u8>> = statement
        .query_row(params![key.type_name, key.namespace, key.name], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(data.map(|d| Object::decode(d.as_slice())).transpose()?)
}

/// Read connections, used from blocking threads.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    fn new(path: PathBuf, readers: usize) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(readers.max(1)),
        }
    }

    fn open(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=10000;")?;
        Ok(conn)
    }

    async fn with<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        let idle = self.idle.lock().expect("reader pool lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = read(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?;
        self.idle.lock().expect("reader pool lock").push(conn);
        result
    }
}

impl History for Readers {
    async fn read(&self, filter: &Filter, after: Revision, limit: usize) -> Result<Page, Error> {
        let filter = filter.clone();
        self.with(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let compacted = read_meta(&tx, "compacted")?;
            if after < compacted {
                return Err(Error::Compacted {
                    requested: after,
                    compacted,
                });
            }
            let current = read_meta(&tx, "revision")?;
            let mut statement = tx.prepare_cached(
                "SELECT revision, kind, data, prev_labels FROM events WHERE revision > ?1
                 AND (?2 = '' OR type = ?2) AND (?3 = '' OR namespace = ?3) AND (?4 = '' OR name = ?4)
                 ORDER BY revision LIMIT ?5",
            )?;
            let mut rows = statement.query(params![
                after as i64,
                filter.type_name,
                filter.namespace,
                filter.name,
                limit as i64
            ])?;
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                let revision: i64 = row.get(0)?;
                let kind: i64 = row.get(1)?;
                let data: Vec<u8> = row.get(2)?;
                let prev: Option<Vec<u8>> = row.get(3)?;
                events.push(Arc::new(Event {
                    revision: revision as u64,
                    kind: if kind == 1 { EventKind::Delete } else { EventKind::Put },
                    object: Object::decode(data.as_slice())?,
                    prev_labels: prev
                        .map(|p| Metadata::decode(p.as_slice()).map(|m| m.labels))
                        .transpose()?,
                }));
            }
            drop(rows);
            drop(statement);
            tx.commit()?;
            let complete_to = if events.len() == limit {
                events.last().map_or(after, |e| e.revision)
            } else {
                current
            };
            Ok(Page { events, complete_to })
        })
        .await
    }
}

enum Command {
    Apply {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<Vec<Written>, Error>>,
    },
    Delete {
        key: Key,
        expect: Option<Expect>,
        reply: oneshot::Sender<Result<Written, Error>>,
    },
    UpdateStatus {
        key: Key,
        status: Any,
        expect: Option<Expect>,
        reply: oneshot::Sender<Result<Written, Error>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<Compaction, Error>>,
    },
}

/// A command's result, held until its transaction commits. Short-lived, one per command, so the
/// size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Done {
    Apply(
        oneshot::Sender<Result<Vec<Written>, Error>>,
        Result<Vec<Written>, Error>,
    ),
    One(
        oneshot::Sender<Result<Written, Error>>,
        Result<Written, Error>,
    ),
    Compact(
        oneshot::Sender<Result<Compaction, Error>>,
        Result<Compaction, Error>,
    ),
}

impl Done {
    /// Replaces a success with `error`, when the commit failed.
    fn fail(self, error: &Error) -> Done {
        match self {
            Done::Apply(tx, Ok(_)) => Done::Apply(tx, Err(error.clone())),
            Done::One(tx, Ok(_)) => Done::One(tx, Err(error.clone())),
            Done::Compact(tx, Ok(_)) => Done::Compact(tx, Err(error.clone())),
            done => done,
        }
    }

    fn send(self) {
        // A caller that went away no longer wants the answer; the change stands all the same.
        match self {
            Done::Apply(tx, r) => drop(tx.send(r)),
            Done::One(tx, r) => drop(tx.send(r)),
            Done::Compact(tx, r) => drop(tx.send(r)),
        }
    }
}

struct Writer {
    conn: Connection,
    registry: Registry,
    hub: Arc<Hub>,
    revision: Revision,
    compacted: Revision,
    /// Events up to here are deleted; up to `compacted` they may linger until purged.
    purged_to: Revision,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::UnboundedReceiver<Command>) {
        loop {
            let first = if self.purged_to < self.compacted {
                match queue.try_recv() {
                    Ok(command) => command,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.purge_step();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            } else {
                match queue.blocking_recv() {
                    Some(command) => command,
                    None => return,
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Runs a group of commands in one transaction and answers them after the commit.
    fn commit(&mut self, mut batch: Vec<Command>) {
        let start = (self.revision, self.compacted);
        let mut events = Vec::new();
        let mut done = Vec::with_capacity(batch.len());
        let result = (|| -> Result<(), Error> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut state = TxState {
                registry: &self.registry,
                revision: self.revision,
                compacted: self.compacted,
                events: &mut events,
            };
            for command in batch.drain(..) {
                let savepoint = tx.savepoint()?;
                let before = (state.revision, state.compacted, state.events.len());
                let (result, succeeded) = state.execute(&savepoint, command);
                if succeeded {
                    savepoint.commit()?;
                } else {
                    drop(savepoint);
                    state.revision = before.0;
                    state.compacted = before.1;
                    state.events.truncate(before.2);
                }
                done.push(result);
            }
            let (revision, compacted) = (state.revision, state.compacted);
            if revision != start.0 {
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'revision'",
                    [revision as i64],
                )?;
            }
            if compacted != start.1 {
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'compacted'",
                    [compacted as i64],
                )?;
            }
            tx.commit()?;
            self.revision = revision;
            self.compacted = compacted;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.hub.publish(&events, self.revision);
                done.into_iter().for_each(Done::send);
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; the batch is rolled back");
                (self.revision, self.compacted) = start;
                for d in done {
                    d.fail(&error).send();
                }
                // Commands never reached (the transaction could not begin) are answered too.
                for command in batch {
                    command.reply_err(error.clone());
                }
            }
        }
    }

    fn purge_step(&mut self) {
        let deleted = self.conn.execute(
            "DELETE FROM events WHERE revision IN
             (SELECT revision FROM events WHERE revision <= ?1 ORDER BY revision LIMIT ?2)",
            params![self.compacted as i64, PURGE_CHUNK as i64],
        );
        match deleted {
            Ok(n) if n < PURGE_CHUNK => {
                self.purged_to = self.compacted;
                if let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!(%error, "wal checkpoint after compaction failed");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "purging compacted events failed; will retry at the next compaction");
                self.purged_to = self.compacted;
            }
        }
    }
}

impl Command {
    fn reply_err(self, error: Error) {
        match self {
            Command::Apply { reply, .. } => drop(reply.send(Err(error))),
            Command::Delete { reply, .. } | Command::UpdateStatus { reply, .. } => {
                drop(reply.send(Err(error)))
            }
            Command::Compact { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The writer's view during one transaction.
struct TxState<'a> {
    registry: &'a Registry,
    revision: Revision,
    compacted: Revision,
    events: &'a mut Vec<Arc<Event>>,
}

impl TxState<'_> {
    /// Runs one command; returns its answer and whether it succeeded (else its savepoint is
    /// rolled back).
    fn execute(&mut self, conn: &Connection, command: Command) -> (Done, bool) {
        match command {
            Command::Apply { ops, reply } => {
                let count = ops.len();
                let mut written = Vec::with_capacity(count);
                for (index, op) in ops.into_iter().enumerate() {
                    let key = op.key();
                    let result = self.next_stamp().and_then(|stamp| {
                        let existing = load(conn, &key)?;
                        match core::plan_op(self.registry, existing.as_ref(), &op, &stamp)? {
                            Some(plan) => self.write(conn, &key, plan),
                            None => Ok(core::checked(existing.as_ref())),
                        }
                    });
                    match result {
                        Ok(w) => written.push(w),
                        Err(error) => {
                            let error = error.in_batch(index, count, &key);
                            return (Done::Apply(reply, Err(error)), false);
                        }
                    }
                }
                (Done::Apply(reply, Ok(written)), true)
            }
            Command::Delete { key, expect, reply } => {
                let result = self.next_stamp().and_then(|stamp| {
                    let existing = load(conn, &key)?;
                    let plan = core::plan_delete(existing.as_ref(), &key, expect, &stamp)?;
                    self.write(conn, &key, plan)
                });
                settle(result, |r| Done::One(reply, r))
            }
            Command::UpdateStatus {
                key,
                status,
                expect,
                reply,
            } => {
                let result = self.next_stamp().and_then(|stamp| {
                    let existing = load(conn, &key)?;
                    let plan = core::plan_update_status(
                        self.registry,
                        existing.as_ref(),
                        &key,
                        &status,
                        expect,
                        &stamp,
                    )?;
                    self.write(conn, &key, plan)
                });
                settle(result, |r| Done::One(reply, r))
            }
            Command::Compact { revision, reply } => {
                let result = if let Err(error) = core::check_compaction(revision, self.revision) {
                    Err(error)
                } else {
                    self.compacted = self.compacted.max(revision);
                    Ok(Compaction {
                        compacted: self.compacted,
                        revision: self.revision,
                    })
                };
                settle(result, |r| Done::Compact(reply, r))
            }
        }
    }

    fn next_stamp(&self) -> Result<Stamp, Error> {
        Ok(Stamp {
            revision: self.revision + 1,
            now: Timestamp::from(SystemTime::now()),
            uid: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Performs a plan: row and event, taking the next revision when it changes anything.
    fn write(&mut self, conn: &Connection, key: &Key, plan: Plan) -> Result<Written, Error> {
        // Encoded once: the same bytes go into the objects row and the event row.
        let (object, outcome, kind, prev_labels, data) = match plan {
            Plan::Unchanged { object, outcome } => return Ok(Written { object, outcome }),
            Plan::Write {
                object,
                outcome,
                prev_labels,
            } => {
                let data = object.encode_to_vec();
                conn.prepare_cached(
                    "INSERT INTO objects (type, namespace, name, revision, data) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (type, namespace, name) DO UPDATE SET revision = excluded.revision, data = excluded.data",
                )?
                .execute(params![key.type_name, key.namespace, key.name, (self.revision + 1) as i64, &data])?;
                (object, outcome, EventKind::Put, prev_labels, data)
            }
            Plan::Remove { object } => {
                conn.prepare_cached(
                    "DELETE FROM objects WHERE type = ?1 AND namespace = ?2 AND name = ?3",
                )?
                .execute(params![key.type_name, key.namespace, key.name])?;
                let data = object.encode_to_vec();
                (object, Outcome::Deleted, EventKind::Delete, None, data)
            }
        };
        self.revision += 1;
        let prev = prev_labels.as_ref().map(|labels| {
            Metadata {
                labels: labels.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        });
        conn.prepare_cached(
            "INSERT INTO events (revision, kind, type, namespace, name, data, prev_labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            self.revision as i64,
            i64::from(kind == EventKind::Delete),
            key.type_name,
            key.namespace,
            key.name,
            data,
            prev
        ])?;
        if kind == EventKind::Put && core::supersedes_history(&key.type_name) {
            conn.prepare_cached(&SUPERSEDED_PUTS)?.execute(params![
                key.namespace,
                key.name,
                self.revision as i64
            ])?;
        }
        self.events.push(Arc::new(Event {
            revision: self.revision,
            kind,
            object: object.clone(),
            prev_labels,
        }));
        Ok(Written { object, outcome })
    }
}

fn settle<T>(
    result: Result<T, Error>,
    done: impl FnOnce(Result<T, Error>) -> Done,
) -> (Done, bool) {
    let succeeded = result.is_ok();
    (done(result), succeeded)
}
