//! `ructl logs -n HERD SLICE [-f]`: a slice's output, read from the rubelet of the slice's
//! node (its address is in the Node's status), like `kubectl logs` reads from the kubelet.
//! Log bytes never pass through the apiserver; the apiserver only says where to look.

use std::io::Write;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use prost::Name;
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::{Node, NodeStatus};
use rubeapi::runink::{Slice, SliceStatus};

/// Where slice `namespace/name`'s logs are served: `http://ADDR/logs/NS/NAME`.
pub async fn locate(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let slice = client
        .get(&Slice::full_name(), namespace, name)
        .await
        .with_context(|| format!("slice {namespace}/{name}"))?;
    let status: Option<SliceStatus> = slice.status_as()?;
    let node = status
        .map(|s| s.node)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            slice
                .metadata
                .as_ref()
                .and_then(|m| m.labels.get("node").cloned())
        });
    let Some(node) = node else {
        bail!("slice {namespace}/{name} is not bound to a node (no node label, no status)");
    };
    let node_object = client
        .get(&Node::full_name(), "", &node)
        .await
        .with_context(|| format!("node {node} of slice {namespace}/{name}"))?;
    let address = node_object
        .status_as::<NodeStatus>()?
        .map(|s| s.address)
        .filter(|a| !a.is_empty());
    let Some(address) = address else {
        bail!("node {node} has not reported an address; is its rubelet running?");
    };
    let base = if address.contains("://") {
        address
    } else {
        format!("http://{address}")
    };
    Ok(format!("{base}/logs/{namespace}/{name}"))
}

/// Copies the log to stdout; with `follow`, until the slice's process exits or the user stops.
pub async fn logs(client: &Client, namespace: &str, name: &str, follow: bool) -> Result<()> {
    let url = locate(client, namespace, name).await?;
    let response = reqwest::Client::new()
        .get(&url)
        .query(&[("follow", follow)])
        .send()
        .await
        .with_context(|| format!("cannot reach the rubelet at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url}: {status}: {}", body.trim());
    }
    let mut body = response.bytes_stream();
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(())
}
