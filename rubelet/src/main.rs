//! `rubelet`: Rube's node agent. It registers its node, keeps the node's lease fresh, and runs
//! the node's controllers (slices, systemd units) on the objects labelled `node=<name>`, plus
//! the cluster controllers (pipelines) when it wins their election. Each controller's cache is
//! mirrored in a local sqlite store, so after a restart the rubelet reconciles before the
//! apiserver answers.
//!
//! `rubelet shim --dir DIR` is the per-slice shim (see the `slices` crate); the rubelet starts
//! it, and it outlives the rubelet.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The shim is dispatched before clap, a runtime or any thread exists: it forks.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "shim") {
        return slices::main_from_args(args);
    }
    let args = rubelet::Args::parse();
    rubelet::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rubelet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rubelet::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rubelet: {error:#}");
            ExitCode::FAILURE
        }
    }
}
