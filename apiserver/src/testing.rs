//! A real apiserver for tests: sqlite in a temp dir, gRPC over TLS on 127.0.0.1 port 0, with the
//! CAs and the admin's client configuration made in that dir as a real first start makes them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rubeapi::rube::ClientConfig;
use rubeapi::{Client, Registry};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admission::Limits;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::store::sqlite::{SqliteOptions, SqliteStore};

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    /// The CAs, for tests that issue credentials of their own.
    pub pki: Arc<Pki>,
    data_dir: PathBuf,
    config: ClientConfig,
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
        // One registry for the store and the service, so types registered at run time reach both.
        let registry = Registry::builtin();
        let store =
            Arc::new(SqliteStore::open(dir, registry.clone(), options).expect("open the store"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (pki, tls, config) = Pki::start(dir, &[], addr).expect("make the test certificates");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(
            listener,
            tls,
            store.clone(),
            registry,
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
            pki,
            data_dir: dir.to_owned(),
            config,
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

    /// The admin's client configuration, as the server wrote it.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Where the admin's client configuration is (`ructl --config`, `rubelet --config`).
    pub fn config_path(&self) -> PathBuf {
        self.data_dir.join(rubeapi::config::ADMIN_FILE)
    }

    /// The join token of a first start (`rubelet --token`), made on the first call: as the
    /// real first start does, it writes `<data dir>/token` and a `rube.JoinToken`, which takes
    /// a revision, so a test server makes it only for tests that join (store tests count
    /// revisions from an empty store).
    pub async fn token(&self) -> rubeapi::join::Token {
        crate::join::first_token(&*self.store, &self.data_dir, self.pki.server_ca_pem())
            .await
            .expect("make the join token")
    }

    /// Where the pipeline controller's client configuration is (`rubelet
    /// --controller-config`).
    pub fn controller_config_path(&self) -> PathBuf {
        self.data_dir.join(rubeapi::config::CONTROLLERS_FILE)
    }

    /// A client with the admin's credential.
    pub async fn client(&self) -> Client {
        Client::connect(&self.config)
            .await
            .expect("connect to the test server")
    }

    /// A client configuration for `user` in `group`, signed by this server's client CA.
    pub fn config_for(&self, user: &str, group: Option<&str>) -> ClientConfig {
        let (cert_pem, key_pem) = self
            .pki
            .issue_client(user, group, crate::pki::LEAF_VALIDITY)
            .expect("issue a client certificate");
        ClientConfig {
            cert_pem,
            key_pem,
            ..self.config.clone()
        }
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

/// A real etcd (Debian's `etcd-server`) on loopback ports with a temp data dir: one member or a
/// cluster. Members are stopped by PID when this is dropped.
pub struct Etcd {
    members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

struct EtcdMember {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Etcd {
    /// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH or in /usr/bin.
    pub fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("ETCD_BIN") {
            return Some(PathBuf::from(bin));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    }

    /// One member.
    pub async fn start() -> Etcd {
        Etcd::start_cluster(1).await
    }

    /// A cluster of `size` members, each ready to serve.
    pub async fn start_cluster(size: usize) -> Etcd {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Etcd::try_start(size).await {
                Ok(etcd) => return etcd,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    async fn try_start(size: usize) -> Result<Etcd, String> {
        let bin = Etcd::binary().ok_or(
            "no etcd binary: install Debian's etcd-server (.ci/install-deps does) or set ETCD_BIN",
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // Ports picked by the kernel, held until just before etcd binds them.
        let listeners: Vec<std::net::TcpListener> = (0..2 * size)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        drop(listeners);
        let mut members: Vec<EtcdMember> = (0..size)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.spawn(&bin, &initial_cluster, "new")?;
        }
        let etcd = Etcd { members, _dir: dir };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut ready = true;
            for member in &self.members {
                if member.child.is_none() {
                    continue;
                }
                let ok = match etcd_client::Client::connect([&member.client_url], None).await {
                    Ok(mut client) => client.get("ready-check", None).await.is_ok(),
                    Err(_) => false,
                };
                ready &= ok;
            }
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| std::fs::read_to_string(&m.log).unwrap_or_default())
                    .collect();
                return Err(format!(
                    "not ready within 30 s; logs:\n{}",
                    logs.join("\n---\n")
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Client URLs of the members that run.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// SIGKILLs member `index`.
    pub fn kill_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The PID of member `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index]
            .child
            .as_ref()
            .map(std::process::Child::id)
    }
}

impl EtcdMember {
    fn spawn(&mut self, bin: &Path, initial_cluster: &str, state: &str) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &self.client_url,
                "--advertise-client-urls",
                &self.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
            ])
            .args([
                "--initial-cluster",
                initial_cluster,
                "--initial-cluster-state",
                state,
            ])
            .args([
                "--initial-cluster-token",
                "rube-test",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }
}

/// A `rube-apiserver` process started by a test, listening on 127.0.0.1 port 0; SIGKILLed when
/// dropped.
pub struct ServerProcess {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its `--data-dir`: the store (sqlite), the certificates and `admin.conf`.
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts `bin` (a test's `env!("CARGO_BIN_EXE_rube-apiserver")`) with `args` after
    /// `--listen 127.0.0.1:0`, and waits for the line that says where it listens. Without a
    /// `--data-dir` in `args` it gets a temp dir of its own.
    pub fn start(bin: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_logging(bin, args, None)
    }

    /// [`ServerProcess::start`], with what it logs (stderr) appended to `log`.
    pub fn start_logging(bin: &str, args: &[&str], log: Option<&Path>) -> ServerProcess {
        use std::io::BufRead;
        let given = args
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from);
        let (data_dir, temp) = match given {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                (temp.path().to_owned(), Some(temp))
            }
        };
        let mut command = std::process::Command::new(bin);
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        if temp.is_some() {
            command.arg("--data-dir").arg(&data_dir);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(match log {
                Some(path) => std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("the apiserver's log")
                    .into(),
                None => std::process::Stdio::null(),
            })
            .spawn()
            .expect("start rube-apiserver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("rube-apiserver did not start: {line:?}"))
            .to_owned();
        ServerProcess {
            child,
            addr,
            data_dir,
            _temp: temp,
        }
    }

    /// Where the admin's client configuration is.
    pub fn config_path(&self) -> PathBuf {
        self.data_dir.join(rubeapi::config::ADMIN_FILE)
    }

    /// The admin's client configuration, as the server wrote it at start.
    pub fn config(&self) -> ClientConfig {
        rubeapi::config::load(&self.config_path()).expect("the admin configuration")
    }

    /// A client with the admin's credential.
    pub async fn client(&self) -> Result<Client, rubeapi::Error> {
        Client::connect(&self.config()).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `deadline` for the process to exit on its own.
    pub fn wait_exit(&mut self, deadline: std::time::Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if std::time::Instant::now() > until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Write `n` of a durability test: slice `name` in `namespace` whose command is `write {n}`.
pub fn numbered_write(namespace: &str, name: &str, n: u64) -> rubeapi::rube::Object {
    let spec = rubeapi::runink::Slice {
        command: format!("write {n}"),
        ..Default::default()
    };
    rubeapi::object::new(namespace, name, &spec)
}

/// The durability check of the crash and failover tests: for every acknowledged
/// [`numbered_write`] (name → (revision, n)), the slice is readable at that revision with that
/// content, or at a later revision (a write in flight when the server died may have landed).
pub async fn assert_acknowledged_writes<'a>(
    client: &Client,
    namespace: &str,
    acked: impl IntoIterator<Item = (&'a String, &'a (u64, u64))>,
) {
    use rubeapi::object::ObjectExt;
    for (name, (revision, n)) in acked {
        let stored = client
            .get("runink.Slice", namespace, name)
            .await
            .unwrap_or_else(|e| panic!("{name} lost: {e}"));
        assert!(
            stored.revision() >= *revision,
            "{name}: acknowledged at {revision}, found {}",
            stored.revision()
        );
        if stored.revision() == *revision {
            let spec: rubeapi::runink::Slice = stored.spec_as().expect("a slice");
            assert_eq!(spec.command, format!("write {n}"), "{name} at {revision}");
        }
    }
}

/// The machine's CPU counters from /proc/stat: (busy, total) in clock ticks, all cores.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("the cpu line");
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th counters.
    (total - ticks[3] - ticks[4], total)
}

/// How busy the whole machine was between two [`machine_ticks`] readings, in percent of all
/// cores, with the load average now: others building on the same cores disturb the figures.
pub fn machine_load(before: (u64, u64)) -> String {
    let after = machine_ticks();
    let busy = (after.0 - before.0) as f64 * 100.0 / (after.1 - before.1).max(1) as f64;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!(
        "the machine's {} cores were {busy:.0}% busy during the run (all processes); load average now {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg.join(" ")
    )
}
