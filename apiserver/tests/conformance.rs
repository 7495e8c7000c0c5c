//! The conformance suite on every backend that runs here: the in-memory reference model and
//! sqlite on real files.

use std::ops::Deref;

use apiserver::conformance_tests;
use apiserver::store::hub::WatchOptions;
use apiserver::store::mem::MemStore;
use apiserver::store::sqlite::{SqliteOptions, SqliteStore};
use rubeapi::Registry;

/// A sqlite store with the temp dir it lives in.
struct Sqlite {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Deref for Sqlite {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(dir.path(), Registry::builtin(), SqliteOptions::default()).unwrap();
    Sqlite { store, _dir: dir }
}

async fn mem() -> Box<MemStore> {
    Box::new(MemStore::new(Registry::builtin(), WatchOptions::default()))
}

conformance_tests!(mem_store, mem());
conformance_tests!(sqlite_store, sqlite());

/// An etcd store on its own etcd (compaction is global to an etcd, so tests do not share one).
struct EtcdBacked {
    store: apiserver::store::etcd::EtcdStore,
    _etcd: apiserver::testing::Etcd,
}

impl Deref for EtcdBacked {
    type Target = apiserver::store::etcd::EtcdStore;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

async fn etcd() -> EtcdBacked {
    use apiserver::store::etcd::{EtcdOptions, EtcdStore};
    let etcd = apiserver::testing::Etcd::start().await;
    let options = EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: "/conformance".into(),
    };
    let store = EtcdStore::connect(options, Registry::builtin())
        .await
        .unwrap();
    EtcdBacked { store, _etcd: etcd }
}

conformance_tests!(etcd_store, etcd());
