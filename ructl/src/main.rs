//! `ructl`: the Rube command line. Each command parses its input, makes one client call (watch:
//! one stream) and prints the result.

mod display;
mod herd;
mod logs;
mod pipeline;
mod token;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use rubeapi::client::{at_revision, must_not_exist};
use rubeapi::rube::{PutRequest, Selector, watch_event};
use rubeapi::{Client, Error, Registry, text};

use crate::display::Output;

#[derive(Debug, Parser)]
#[command(
    name = "ructl",
    version,
    about = "Put, get, list, delete and watch Rube objects"
)]
struct Cli {
    /// The client configuration (server, CA, certificate and key) [default: $RUBE_CONFIG, then
    /// the local apiserver's admin.conf, then ~/.config/rube/config]
    #[arg(long, global = true)]
    config: Option<PathBuf>,

    /// The apiserver's address, instead of the configuration's (still over TLS)
    #[arg(long, global = true, env = "RUBE_SERVER")]
    server: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update objects read as textproto (several separated by `---` lines); all or none
    Put {
        /// Read from this file instead of standard input
        #[arg(short, long)]
        file: Option<PathBuf>,
        /// Fail if an object already exists
        #[arg(long, conflicts_with = "if_revision")]
        create: bool,
        /// Only update if the object is at this revision (one object only)
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Show one object by name, or list objects
    Get(Query),
    /// List objects (with a NAME: just that one)
    List(Query),
    /// Delete an object: `ructl delete 'type = "T", metadata { namespace: "N", name: "X" }'` or
    /// `ructl delete -t T -n N X`
    Delete {
        /// The object's type
        #[arg(short = 't', long = "type")]
        type_name: Option<String>,
        /// The namespace (a Herd's name)
        #[arg(short, long, default_value = "")]
        namespace: String,
        /// A NAME with -t, else a textproto reference
        target: String,
        /// Only delete if the object is at this revision
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Stream changes as `update { ... }` / `delete { ... }` until interrupted
    Watch {
        #[command(flatten)]
        query: Query,
        /// Replay every change after this revision first
        #[arg(long)]
        from_revision: Option<u64>,
        /// Also print bookmarks (progress notes on quiet streams)
        #[arg(long)]
        bookmarks: bool,
    },
    /// Register the message types of a .proto file: its messages with option (rube.kind) become
    /// kinds the apiserver stores and validates. Imports resolve against the FILE's directory,
    /// the -I directories, and the types the apiserver already knows (rube/api.proto included)
    Register {
        file: PathBuf,
        /// More directories to look for imports in
        #[arg(short = 'I', long = "include")]
        include: Vec<PathBuf>,
        /// The name of the rube.Type object [default: the file's proto package]
        #[arg(long)]
        name: Option<String>,
    },
    /// Forget history up to and including REVISION
    Compact { revision: u64 },
    /// List the kinds the apiserver stores
    Types,
    /// Show which client configuration is in use, and who it says you are
    Config,
    /// Show a pipeline's steps; skip, retry, pause, resume
    #[command(subcommand)]
    Pipeline(pipeline::Command),
    /// Make a tenant's Herd: `ructl herd create NAME --owner USER`
    #[command(subcommand)]
    Herd(herd::Command),
    /// Join tokens for new nodes: create, list, delete (revoke)
    #[command(subcommand)]
    Token(token::Command),
    /// Print a slice's output (stdout and stderr), read from its node's rubelet
    Logs {
        /// The slice's namespace (its Herd)
        #[arg(short, long)]
        namespace: String,
        /// The slice
        name: String,
        /// Keep printing as the slice writes, until it exits
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Query {
    /// The objects' type, e.g. api.systemd.Unit
    #[arg(short = 't', long = "type")]
    type_name: String,
    /// The namespace (a Herd's name); all namespaces when left out
    #[arg(short, long, default_value = "")]
    namespace: String,
    /// Only this object
    name: Option<String>,
    /// A label selector: `node=worker-1,tier!=db`
    #[arg(short = 'l', long, default_value = "")]
    selector: String,
    /// Output format
    #[arg(short, long, value_enum, default_value = "textproto")]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Textproto,
    Json,
    Table,
}

impl Query {
    fn selector(&self) -> Selector {
        Selector {
            r#type: self.type_name.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone().unwrap_or_default(),
            labels: self.selector.clone(),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut found = rubeapi::config::find(cli.config.as_deref())?;
    if let Some(server) = &cli.server {
        found.config.server.clone_from(server);
    }
    if let Command::Config = cli.command {
        return show_config(&found);
    }
    let client = Client::connect(&found.config)
        .await
        .with_context(|| format!("with the client configuration {}", found.path.display()))?;
    let registry = client
        .registry()
        .await
        .context("cannot read the apiserver's types")?;
    let out = Output::new(registry.clone());
    match cli.command {
        Command::Put {
            file,
            create,
            if_revision,
        } => put(&client, &registry, &out, file, create, if_revision).await,
        Command::Get(query) => get(&client, &out, &query, query.name.is_some()).await,
        Command::List(query) => get(&client, &out, &query, false).await,
        Command::Delete {
            type_name,
            namespace,
            target,
            if_revision,
        } => {
            let (type_name, namespace, name) = match type_name {
                Some(type_name) => (type_name, namespace, target),
                None => {
                    let r = text::parse_object_ref(&registry, &target)
                        .map_err(|e| at_source("<argument>", e))?;
                    let m = r.metadata.unwrap_or_default();
                    (r.r#type, m.namespace, m.name)
                }
            };
            let response = client
                .delete(&type_name, &namespace, &name, if_revision.map(at_revision))
                .await?;
            out.deleted(&response);
            Ok(())
        }
        Command::Watch {
            query,
            from_revision,
            bookmarks,
        } => watch(&client, &out, &query, from_revision, bookmarks).await,
        Command::Register {
            file,
            include,
            name,
        } => {
            let (name, set) = compile_proto(&registry, &file, &include, name)?;
            let object = rubeapi::object::new(
                "",
                &name,
                &rubeapi::rube::Type {
                    file_descriptor_set: set,
                },
            );
            let results = client
                .apply(vec![PutRequest {
                    object: Some(object),
                    precondition: None,
                }])
                .await?;
            for result in &results {
                out.put(result);
            }
            Ok(())
        }
        Command::Compact { revision } => {
            let r = client.compact(revision).await?;
            println!(
                "compacted to revision {} (current revision {})",
                r.compacted_revision, r.revision
            );
            Ok(())
        }
        Command::Types => {
            out.types(&registry);
            Ok(())
        }
        Command::Config => show_config(&found),
        Command::Pipeline(command) => pipeline::run(&client, command).await,
        Command::Herd(command) => herd::run(&client, command).await,
        Command::Token(command) => token::run(&client, &found.config, command).await,
        Command::Logs {
            namespace,
            name,
            follow,
        } => logs::logs(&client, &namespace, &name, follow).await,
    }
}

/// `ructl config`: the file, why it was chosen, the server, and the identity in its
/// certificate.
fn show_config(found: &rubeapi::config::Found) -> Result<()> {
    println!("config:  {} ({})", found.path.display(), found.source);
    println!("server:  {}", found.config.server);
    let (identity, expires) = rubeapi::identity::Identity::from_pem(&found.config.cert_pem)
        .map_err(|e| anyhow::anyhow!("{}: cert_pem: {e}", found.path.display()))?;
    println!("user:    {}", identity.user);
    println!("groups:  {}", identity.groups.join(","));
    println!("expires: {expires}");
    Ok(())
}

/// Compiles `file` with protox, resolving imports from its directory, `include` and the
/// apiserver's types. Returns the type object's name and the encoded FileDescriptorSet of the
/// file alone.
fn compile_proto(
    registry: &Registry,
    file: &std::path::Path,
    include: &[PathBuf],
    name: Option<String>,
) -> Result<(String, Vec<u8>)> {
    use prost::Message;
    use protox::file::{ChainFileResolver, DescriptorSetFileResolver, IncludeFileResolver};
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(dir.to_owned()));
    for extra in include {
        resolver.add(IncludeFileResolver::new(extra.clone()));
    }
    let known =
        prost_types::FileDescriptorSet::decode(registry.encode_file_descriptor_set().as_slice())?;
    resolver.add(DescriptorSetFileResolver::new(known));
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(false);
    let file_name = file.file_name().context("the .proto path names no file")?;
    compiler
        .open_file(file_name)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let package = compiler
        .descriptor_pool()
        .get_file_by_name(&file_name.to_string_lossy())
        .map(|f| f.package_name().to_owned())
        .unwrap_or_default();
    let name = match name {
        Some(name) => name,
        None if !package.is_empty() => package.to_lowercase().replace('_', "-"),
        None => bail!(
            "{} declares no package: name the type with --name",
            file.display()
        ),
    };
    Ok((name, compiler.encode_file_descriptor_set()))
}

/// A syntax error gets the name of its source in front of line:column.
fn at_source(source: &str, error: Error) -> anyhow::Error {
    match error {
        Error::Syntax { .. } => anyhow::anyhow!("{source}:{error}"),
        other => other.into(),
    }
}

async fn put(
    client: &Client,
    registry: &Registry,
    out: &Output,
    file: Option<PathBuf>,
    create: bool,
    if_revision: Option<u64>,
) -> Result<()> {
    let (source, input) = match file {
        Some(path) => {
            let input = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (path.display().to_string(), input)
        }
        None => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read standard input")?;
            ("<stdin>".to_owned(), input)
        }
    };
    let objects = text::parse_objects(registry, &input).map_err(|e| at_source(&source, e))?;
    if if_revision.is_some() && objects.len() != 1 {
        bail!(
            "--if-revision takes exactly one object, the input has {}",
            objects.len()
        );
    }
    let precondition = match (create, if_revision) {
        (true, _) => Some(must_not_exist()),
        (false, Some(revision)) => Some(at_revision(revision)),
        (false, None) => None,
    };
    let puts = objects
        .into_iter()
        .map(|object| PutRequest {
            object: Some(object),
            precondition,
        })
        .collect();
    let results = client.apply(puts).await?;
    for result in &results {
        out.put(result);
    }
    Ok(())
}

async fn get(client: &Client, out: &Output, query: &Query, single: bool) -> Result<()> {
    if single {
        let name = query.name.as_deref().unwrap_or_default();
        let object = client.get(&query.type_name, &query.namespace, name).await?;
        return out.objects(&[object], query.output, true);
    }
    let listing = client.list(query.selector()).await?;
    out.objects(&listing.objects, query.output, false)
}

async fn watch(
    client: &Client,
    out: &Output,
    query: &Query,
    from: Option<u64>,
    bookmarks: bool,
) -> Result<()> {
    if query.output == Format::Table {
        bail!("watch prints textproto or json, not a table");
    }
    let mut from = from;
    let mut backoff = new_backoff();
    loop {
        let stream = match client.watch(query.selector(), from).await {
            Ok(stream) => stream,
            Err(error) if is_transient(&error) => {
                wait(&mut backoff, &error).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(error) if is_transient(&error) => {
                    wait(&mut backoff, &error).await;
                    break;
                }
                Err(error) => return Err(error.into()),
            };
            backoff = new_backoff();
            let revision = match &event.event {
                Some(watch_event::Event::Update(o) | watch_event::Event::Delete(o)) => {
                    o.metadata.as_ref().map_or(0, |m| m.revision)
                }
                Some(watch_event::Event::Bookmark(b)) => b.revision,
                None => continue,
            };
            // Resuming after a disconnect starts right after the last event seen.
            from = Some(revision);
            if matches!(event.event, Some(watch_event::Event::Bookmark(_))) && !bookmarks {
                continue;
            }
            out.event(&event, query.output)?;
            std::io::stdout().flush()?;
        }
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

fn is_transient(error: &Error) -> bool {
    error.is_transient()
}

async fn wait(backoff: &mut impl Iterator<Item = Duration>, error: &Error) {
    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
    eprintln!("watch interrupted ({error}); resuming in {delay:?}");
    tokio::time::sleep(delay).await;
}
