//! `file-controller [--config FILE] --node NAME --root DIR`: registers the `example.files` type,
//! then keeps the files of the `example.files.File` objects bound to NODE under DIR.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use controllers::{Options, run};
use file_controller::{DESCRIPTOR_SET, FileController, TYPE_NAME};
use rubeapi::Client;
use rubeapi::rube::{PutRequest, Type};

#[derive(Debug, Parser)]
#[command(about = "Example Rube controller: files on a node, from example.files.File objects")]
struct Args {
    /// The client configuration, found as ructl finds it when left out ($RUBE_CONFIG, the
    /// local apiserver's admin.conf, ~/.config/rube/config)
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's name: objects labelled node=NAME are this controller's
    #[arg(long)]
    node: String,
    /// Where files go: an object's path /etc/motd becomes ROOT/etc/motd
    #[arg(long)]
    root: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let found = rubeapi::config::find(args.config.as_deref())?;
    let client = Client::connect(&found.config).await?;
    // Like an operator installing its CRD: register the type this controller serves.
    let spec = Type {
        file_descriptor_set: DESCRIPTOR_SET.to_vec(),
    };
    client
        .apply(vec![PutRequest {
            object: Some(rubeapi::object::new("", TYPE_NAME, &spec)),
            precondition: None,
        }])
        .await
        .context("cannot register the example.files type")?;
    let controller = FileController {
        node: args.node,
        root: args.root,
        client: client.clone(),
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(controller, client, Options::default(), shutdown).await?;
    Ok(())
}
