//! The rubelet as a library: what `rubelet` runs, in pieces tests can reach.
//!
//! # Layout
//! - [`node`]: the node's registration, status and lease renewals (pure decisions + one loop).
//! - [`state`]: the local sqlite state store with each controller's mirrored cache.
//! - [`credential`]: the node's credential: joined with a token, kept and renewed in the
//!   state dir.
//! - [`election`]: lease-based leader election for cluster controllers.
//! - [`server`]: the rubelet's HTTP endpoint: `/healthz`, `/metrics`, slice logs.
//! - [`run`]: ties them together with the controllers until SIGTERM.
//!
//! The rubelet never writes an object's spec (only status, through UpdateStatus), and never
//! needs the apiserver to keep what runs running.

pub mod credential;
pub mod election;
pub mod node;
pub mod server;
pub mod state;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use controllers::{Key, Metrics, Options, Reflector};
use prost::Name;
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Selector;
use rubeapi::runink::Herd;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::NodeConfig;

use crate::state::StateStore;

#[derive(Debug, clap::Parser)]
#[command(
    name = "rubelet",
    version,
    about = "Rube's node agent: registers the node and runs its controllers"
)]
pub struct Args {
    /// This node's name; objects labelled node=NAME are this node's [default: the hostname]
    #[arg(long, env = "RUBELET_NAME")]
    pub name: Option<String>,

    /// A client configuration to use instead of joining: the apiserver, its CA, and this
    /// node's certificate and key (issued by the operator's own CA)
    /// [default: <state dir>/rubelet.conf, written when the node joined]
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// The apiserver's address (host:port, always TLS): where to join, and where to connect
    /// instead of the configuration's
    #[arg(long, env = "RUBE_SERVER")]
    pub server: Option<String>,

    /// The join token (the apiserver's <data dir>/token, or `ructl token create`): the
    /// first start joins with it and keeps the node's credentials in the state dir
    #[arg(long, env = "RUBELET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The cluster controllers' client configuration (the apiserver's controllers.conf):
    /// with it this rubelet takes part in the pipeline controller's election, acting as the
    /// controller, never as the node
    #[arg(long)]
    pub controller_config: Option<PathBuf>,

    /// Where the rubelet keeps its state: rubelet.db, slices, logs, pipes
    #[arg(long, env = "RUBELET_STATE_DIR", default_value = "/var/lib/rubelet")]
    pub state_dir: PathBuf,

    /// A label of this node, KEY=VALUE; repeatable
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Where /healthz, /metrics and slice logs are served; port 0 picks one (printed)
    #[arg(long, default_value = "127.0.0.1:7402")]
    pub listen: SocketAddr,

    /// The address others reach this rubelet at [default: the listen address]
    #[arg(long)]
    pub advertise: Option<String>,

    /// How often the node's lease is renewed
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_interval: Duration,

    /// The node lease's duration as written in the lease (the apiserver's --node-grace decides)
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// Controllers to run: slices, units, pipelines
    #[arg(long, value_delimiter = ',', default_value = "slices,units,pipelines")]
    pub controllers: Vec<ControllerName>,

    /// How long a cluster controller's lease lasts before another rubelet takes over
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub election_lease: Duration,

    /// How often every object is reconciled even without a change
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,

    /// Rube's cgroup subtree, under the rubelet's own cgroup; rubelets sharing a machine
    /// (tests, demos) need one each
    #[arg(long, default_value = "rube")]
    pub cgroup_subtree: String,

    /// Between SIGTERM and SIGKILL when a slice is stopped or times out
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,

    /// Where the unit controller writes unit files (must be in the manager's search path)
    #[arg(long, default_value = systemd_units::controller::SYSTEM_UNIT_DIR)]
    pub unit_dir: PathBuf,

    /// Which systemd manager runs units: the system's (PID 1) or the calling user's
    #[arg(long, value_enum, default_value = "system")]
    pub systemd_manager: SystemdManager,

    /// Log format
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemdManager {
    System,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerName {
    Slices,
    Units,
    Pipelines,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

fn parse_label(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{input}' is not KEY=VALUE")),
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hostname() -> Result<String> {
    let name = nix::unistd::gethostname().context("cannot read the hostname; pass --name")?;
    name.into_string()
        .map_err(|_| anyhow::anyhow!("the hostname is not UTF-8; pass --name"))
}

/// Runs the rubelet until SIGTERM or Ctrl-C.
///
/// # Errors
/// When the state dir or the listen address cannot be used. The apiserver being unreachable is
/// not an error: the rubelet runs from its local state and keeps trying.
pub async fn run(args: Args) -> Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => hostname()?,
    };
    if name.is_empty() {
        bail!("--name is empty");
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state dir {}", args.state_dir.display()))?;
    let state = StateStore::open(&args.state_dir)?;
    let (mut config, config_path) = credential::resolve(&args, &name).await?;
    if let Some(server) = &args.server {
        config.server.clone_from(server);
    }
    let server = config.server.clone();
    let client = Client::connect_lazy(&config)
        .with_context(|| format!("the client configuration {}", config_path.display()))?;
    let controller_client = match &args.controller_config {
        Some(path) => {
            let mut config = rubeapi::config::load(path)?;
            if let Some(server) = &args.server {
                config.server.clone_from(server);
            }
            Some(
                Client::connect_lazy(&config)
                    .with_context(|| format!("the controller configuration {}", path.display()))?,
            )
        }
        None => None,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Metrics::new();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let mut labels: HashMap<String, String> = args.labels.iter().cloned().collect();
    labels.insert("node".to_owned(), name.clone());
    let config = NodeConfig {
        name: name.clone(),
        labels,
        address: args.advertise.clone().unwrap_or_else(|| addr.to_string()),
        capacity: node::machine(),
        renew_every: args.renew_interval,
        lease_duration: args.lease_duration,
    };
    let (registered, registration) = tokio::sync::oneshot::channel();
    tasks.spawn(node::run(
        client.clone(),
        config,
        cancel.clone(),
        registered,
    ));

    let shared = Shared {
        name: name.clone(),
        client: client.clone(),
        controller_client,
        state: state.clone(),
        state_dir: args.state_dir.clone(),
        metrics: metrics.clone(),
        resync: args.resync,
        election_lease: args.election_lease,
        cgroup_subtree: args.cgroup_subtree.clone(),
        kill_grace: args.kill_grace,
        unit_dir: args.unit_dir.clone(),
        systemd_manager: args.systemd_manager,
        cancel: cancel.clone(),
    };
    for controller in &args.controllers {
        shared.start(*controller, &mut tasks)?;
    }

    let served = server::Served {
        metrics: metrics.clone(),
        state_dir: args.state_dir.clone(),
    };
    tasks.spawn({
        let cancel = cancel.clone();
        async move {
            if let Err(error) = server::serve(listener, served, cancel.cancelled_owned()).await {
                tracing::error!(%error, "the rubelet's http server stopped");
            }
        }
    });

    tracing::info!(node = %name, %addr, %server, config = %config_path.display(), state_dir = %args.state_dir.display(), "rubelet started");
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    // READY=1 means "registered": until then the node's controllers already run what the
    // local state holds, but the cluster does not know the node yet.
    let waiting = format!("registering node {name} with {server}");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&waiting)]);
    tasks.spawn(async move {
        if registration.await.is_ok() {
            let _ = sd_notify::notify(
                false,
                &[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("registered; running the node's controllers"),
                ],
            );
        }
    });

    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; workloads keep running");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What every controller the rubelet starts shares.
#[derive(Clone)]
struct Shared {
    name: String,
    client: Client,
    /// The cluster controllers' credential (`--controller-config`).
    controller_client: Option<Client>,
    state: StateStore,
    state_dir: PathBuf,
    metrics: Metrics,
    resync: Duration,
    election_lease: Duration,
    cgroup_subtree: String,
    kill_grace: Duration,
    unit_dir: PathBuf,
    systemd_manager: SystemdManager,
    cancel: CancellationToken,
}

impl Shared {
    fn options(&self, controller: &str) -> Options {
        Options {
            metrics: self.metrics.clone(),
            resync: Some(self.resync),
            mirror: Some(self.state.mirror(controller)),
            ..Options::default()
        }
    }

    /// Runs `controller` until shutdown, with the keys it asks to be woken for.
    fn spawn<C: controllers::Controller>(
        &self,
        controller: C,
        wakeups: impl futures::Stream<Item = Key> + Send + 'static,
        tasks: &mut JoinSet<()>,
    ) {
        let options = self.options(controller.name());
        let client = self.client.clone();
        let cancel = self.cancel.clone();
        tasks.spawn(async move {
            let name = controller.name().to_owned();
            let shutdown = cancel.cancelled_owned();
            if let Err(error) =
                controllers::run_with_wakeups(controller, client, options, wakeups, shutdown).await
            {
                tracing::error!(controller = %name, %error, "controller stopped");
            }
        });
    }

    fn start(&self, which: ControllerName, tasks: &mut JoinSet<()>) -> Result<()> {
        match which {
            ControllerName::Slices => self.start_slices(tasks),
            ControllerName::Units => {
                let systemd = match self.systemd_manager {
                    SystemdManager::System => systemd_units::Systemctl::system(),
                    SystemdManager::User => systemd_units::Systemctl::user(),
                };
                // Its first inventory checks for the manager and says clearly when systemd is
                // not PID 1; the rest of the rubelet runs either way.
                let controller = systemd_units::UnitController::new(
                    self.name.clone(),
                    self.unit_dir.clone(),
                    self.state_dir.join("units"),
                    self.client.clone(),
                    systemd,
                );
                self.spawn(controller, futures::stream::pending(), tasks);
                Ok(())
            }
            ControllerName::Pipelines => {
                self.start_pipelines(tasks);
                Ok(())
            }
        }
    }

    /// The pipeline controller, on whichever rubelet wins its election. It keeps no mirror: a
    /// cluster controller acts on the whole cluster and must not act on a stale copy of it
    /// (a rubelet that leads again after a long time would resurrect deleted pipelines).
    fn start_pipelines(&self, tasks: &mut JoinSet<()>) {
        let Some(controller_client) = self.controller_client.clone() else {
            tracing::info!(
                "not running for the pipeline controller: it acts with a credential of its own \
                 (--controller-config, the apiserver's controllers.conf), never the node's"
            );
            return;
        };
        let shared = self.clone();
        tasks.spawn(election::lead(
            controller_client.clone(),
            rubeapi::object::controller_lease("pipelines"),
            self.name.clone(),
            election::Timing::for_duration(self.election_lease),
            self.cancel.clone(),
            move |lost: CancellationToken| {
                let client = controller_client.clone();
                let options = Options {
                    mirror: None,
                    ..shared.options("pipelines")
                };
                async move {
                    let stop = lost.cancelled_owned();
                    if let Err(error) = pipelines::run(client, options, stop).await {
                        tracing::error!(%error, "pipeline controller stopped");
                    }
                }
            },
        ));
    }

    /// The slice controller, after taking the cgroup subtree and sweeping orphans out of it.
    fn start_slices(&self, tasks: &mut JoinSet<()>) -> Result<()> {
        let hierarchy = cgroups::Hierarchy::detect(&self.cgroup_subtree)
            .context("cannot find the cgroup hierarchy for slices")?;
        if let Some(leaf) = hierarchy
            .enter_leaf("rubelet")
            .context("cannot move the rubelet into a leaf cgroup (cgroup v2)")?
        {
            tracing::info!(leaf = %leaf.display(), "moved into a leaf cgroup");
        }
        // Cgroups left by slices this rubelet no longer knows (a state dir wiped, a crash
        // between creating a cgroup and recording it): nothing may leak across restarts.
        let orphans = slices::controller::sweep(&hierarchy, &self.state_dir, self.kill_grace)
            .context("cannot sweep orphaned slice cgroups")?;
        if !orphans.is_empty() {
            tracing::warn!(?orphans, "removed orphaned slice cgroups");
        }
        let shim = std::env::current_exe().context("cannot find the rubelet's own binary")?;
        let mut config = slices::controller::Config::new(
            &self.name,
            &self.state_dir,
            &shim,
            hierarchy,
            self.client.clone(),
        );
        config.kill_grace = self.kill_grace;
        config.herd_quota = self.herd_quotas(tasks);
        let controller = slices::SliceController::new(config);
        let wakeups = controller
            .wakeups()
            .context("the slice controller's wakeups were taken")?;
        let wakeups = tokio_stream::wrappers::UnboundedReceiverStream::new(wakeups);
        self.spawn(controller, wakeups, tasks);
        Ok(())
    }

    /// Herd quotas from a mirrored cache of every Herd, for the Herd cgroups.
    fn herd_quotas(&self, tasks: &mut JoinSet<()>) -> slices::controller::HerdQuota {
        let selector = Selector {
            r#type: Herd::full_name(),
            ..Default::default()
        };
        let (reflector, cache) =
            Reflector::new(self.client.clone(), selector, Options::default().reconnect);
        let reflector = reflector.with_mirror(self.state.mirror("herds"));
        tasks.spawn(reflector.run(|_| {}, self.cancel.clone()));
        Arc::new(move |herd: &str| {
            let object = cache.get(&Key::new(&Herd::full_name(), "", herd))?;
            object.spec_as::<Herd>().ok()?.quota
        })
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
