//! A real apiserver for tests: sqlite in a temp dir, gRPC on 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rubeapi::{Client, Registry};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admission::Limits;
use crate::metrics::Metrics;
use crate::store::sqlite::{SqliteOptions, SqliteStore};

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on a fresh temp dir with default options.
    pub async fn start() -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server =
            TestServer::start_in(temp.path(), SqliteOptions::default(), Limits::default()).await;
        server._temp = Some(temp);
        server
    }

    /// A server on `dir`, which outlives it.
    pub async fn start_in(dir: &Path, options: SqliteOptions, limits: Limits) -> TestServer {
        let store =
            Arc::new(SqliteStore::open(dir, Registry::builtin(), options).expect("open the store"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(
            listener,
            store.clone(),
            Registry::builtin(),
            limits,
            Arc::new(Metrics::new()),
            async {
                let _ = stopped.await;
            },
        ));
        let task = tokio::spawn(async move {
            task.await.expect("server task").expect("server");
        });
        TestServer {
            addr,
            store,
            data_dir: dir.to_owned(),
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `127.0.0.1:PORT`, as `ructl --server` takes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.address())
            .await
            .expect("connect to the test server")
    }

    /// Stops the server gracefully and waits until the store is closed.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
