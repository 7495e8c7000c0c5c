//! `ructl pipeline`: a pipeline's DAG with each step's state (`status`, `--watch`, `-o dot`),
//! and a user's actions on it (`skip`, `retry`, `pause`, `resume`), which edit the spec with a
//! revision precondition and try again on a conflict.
//!
//! Each command: parse, one client call (an edit: get then a conditional put, again on
//! conflict; a watch: one stream), one display function. Rendering is pure and lives in
//! [`render_table`] and [`render_dot`].

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt;
use prost::Name;
use rubeapi::Client;
use rubeapi::client::at_revision;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Selector, watch_event};
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, PipelineStatus, StepStatus};

/// Conditional puts that lose to another writer are tried again this many times.
const EDIT_ATTEMPTS: usize = 10;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the DAG with each step's state
    Status {
        /// The Herd (namespace)
        #[arg(short, long)]
        namespace: String,
        name: String,
        /// Redraw whenever the pipeline changes, until interrupted
        #[arg(long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: StatusFormat,
    },
    /// Skip a step: stop it if it runs, mark it SKIPPED, let its dependents go on
    Skip(StepArgs),
    /// Retry a failed step once more
    Retry(StepArgs),
    /// Start no new steps; running ones finish
    Pause(PipelineArgs),
    /// Start steps again
    Resume(PipelineArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// The Herd (namespace)
    #[arg(short, long)]
    namespace: String,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The Herd (namespace)
    #[arg(short, long)]
    namespace: String,
    name: String,
    step: String,
}

pub async fn run(client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Status {
            namespace,
            name,
            watch,
            output,
        } => {
            if watch {
                return watch_status(client, &namespace, &name, output).await;
            }
            let object = client
                .get(&Pipeline::full_name(), &namespace, &name)
                .await?;
            print!("{}", render(&object, output)?);
            Ok(())
        }
        Command::Skip(a) => {
            let step = a.step.clone();
            edit(client, &a.namespace, &a.name, |p| {
                let s = find_step(p, &step)?;
                if s.skip {
                    bail!("step '{step}' is already skipped");
                }
                s.skip = true;
                Ok(format!("step '{step}' will be skipped"))
            })
            .await
        }
        Command::Retry(a) => {
            let step = a.step.clone();
            edit(client, &a.namespace, &a.name, |p| {
                let s = find_step(p, &step)?;
                s.retry_requests += 1;
                Ok(format!(
                    "step '{step}' gets one more attempt if it failed (retry request {})",
                    s.retry_requests
                ))
            })
            .await
        }
        Command::Pause(a) => {
            edit(client, &a.namespace, &a.name, |p| {
                p.paused = true;
                Ok("paused: no new steps start".to_owned())
            })
            .await
        }
        Command::Resume(a) => {
            edit(client, &a.namespace, &a.name, |p| {
                p.paused = false;
                Ok("resumed".to_owned())
            })
            .await
        }
    }
}

fn find_step<'a>(pipeline: &'a mut Pipeline, step: &str) -> Result<&'a mut rubeapi::runink::Step> {
    let names: Vec<String> = pipeline.steps.iter().map(|s| s.name.clone()).collect();
    pipeline
        .steps
        .iter_mut()
        .find(|s| s.name == step)
        .with_context(|| {
            format!(
                "no step '{step}' in this pipeline (steps: {})",
                names.join(", ")
            )
        })
}

/// Reads the pipeline, changes its spec and puts it back if nobody wrote in between; on a
/// conflict, reads again and retries.
async fn edit(
    client: &Client,
    namespace: &str,
    name: &str,
    change: impl Fn(&mut Pipeline) -> Result<String>,
) -> Result<()> {
    for _ in 0..EDIT_ATTEMPTS {
        let mut object = client.get(&Pipeline::full_name(), namespace, name).await?;
        let mut spec: Pipeline = object.spec_as()?;
        let said = change(&mut spec)?;
        let revision = object.revision();
        object.spec = Some(object::pack(&spec));
        match client.put(object, Some(at_revision(revision))).await {
            Ok(response) => {
                let revision = response.object.as_ref().map_or(0, |o| o.revision());
                println!("pipeline {namespace}/{name}: {said} (revision {revision})");
                return Ok(());
            }
            Err(error) if error.is_conflict() => continue,
            Err(error) => return Err(error.into()),
        }
    }
    bail!("pipeline {namespace}/{name} kept changing: gave up after {EDIT_ATTEMPTS} conflicts")
}

/// Prints the pipeline, then redraws it after every change; ends when it is deleted.
async fn watch_status(
    client: &Client,
    namespace: &str,
    name: &str,
    output: StatusFormat,
) -> Result<()> {
    let object = client.get(&Pipeline::full_name(), namespace, name).await?;
    redraw(&render(&object, output)?)?;
    let selector = Selector {
        r#type: Pipeline::full_name(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    let stream = client.watch(selector, Some(object.revision())).await?;
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event?.event {
            Some(watch_event::Event::Update(object)) => redraw(&render(&object, output)?)?,
            Some(watch_event::Event::Delete(_)) => {
                println!("pipeline {namespace}/{name} was deleted");
                return Ok(());
            }
            _ => {}
        }
    }
    bail!("the watch of pipeline {namespace}/{name} ended")
}

fn redraw(screen: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    // Clear the screen and go home, then draw.
    write!(out, "\x1b[2J\x1b[H{screen}")?;
    out.flush()?;
    Ok(())
}

fn render(object: &Object, output: StatusFormat) -> Result<String> {
    let spec: Pipeline = object.spec_as()?;
    let status: PipelineStatus = object.status_as()?.unwrap_or_default();
    Ok(match output {
        StatusFormat::Table => render_table(object, &spec, &status),
        StatusFormat::Dot => render_dot(object, &spec, &status),
    })
}

fn state_name(status: Option<&StepStatus>) -> &'static str {
    status
        .and_then(|s| State::try_from(s.state).ok())
        .filter(|s| *s != State::Unspecified)
        .map_or("-", |s| s.as_str_name())
}

/// A header line, then one row per step in spec order (dependencies first, as admission
/// keeps no cycle): its state (with `succeeded/shards` for a parallel step), attempts, node,
/// slice, what it depends on and the message.
pub fn render_table(object: &Object, spec: &Pipeline, status: &PipelineStatus) -> String {
    let mode = Mode::try_from(spec.mode).map_or("-", |m| m.as_str_name());
    let phase = Phase::try_from(status.phase)
        .ok()
        .filter(|p| *p != Phase::Unspecified)
        .map_or("-", |p| p.as_str_name());
    let generation = object.metadata.as_ref().map_or(0, |m| m.generation);
    let mut out = format!(
        "pipeline {} {mode} {phase}{} (generation {generation}, observed {})\n",
        object.display_name(),
        if spec.paused { " (paused)" } else { "" },
        status.observed_generation
    );
    let header = [
        "STEP", "STATE", "ATTEMPTS", "NODE", "SLICE", "AFTER", "MESSAGE",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for step in &spec.steps {
        let s = status.steps.iter().find(|s| s.name == step.name);
        let after = if step.depends_on.is_empty() {
            "-".to_owned()
        } else {
            step.depends_on.join(",")
        };
        let mut state = state_name(s).to_owned();
        if let Some(s) = s.filter(|s| s.shards > 0) {
            let _ = write!(state, " {}/{}", s.shards_succeeded, s.shards);
        }
        if step.skip && state != "SKIPPED" {
            state.push_str(" (skip)");
        }
        let or_dash = |v: &str| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.to_owned()
            }
        };
        rows.push([
            step.name.clone(),
            state,
            s.map_or("0".into(), |s| s.attempts.to_string()),
            or_dash(s.map_or("", |s| s.node.as_str())),
            or_dash(s.map_or("", |s| s.slice.as_str())),
            after,
            s.map_or(String::new(), |s| match s.exit_code {
                Some(code) if s.message.is_empty() => format!("exit code {code}"),
                _ => s.message.clone(),
            }),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 6 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Graphviz: one box per step, coloured by state, an edge from each dependency.
pub fn render_dot(object: &Object, spec: &Pipeline, status: &PipelineStatus) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=filled];\n",
        object.display_name()
    );
    for step in &spec.steps {
        let s = status.steps.iter().find(|s| s.name == step.name);
        let state = state_name(s);
        let colour = match state {
            "SUCCESS" => "palegreen",
            "RUNNING" => "lightskyblue",
            "FAILED" => "salmon",
            "SKIPPED" => "lightgrey",
            "ACTION_PENDING" => "khaki",
            _ => "white",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{state}\", fillcolor={colour}];",
            step.name, step.name
        );
    }
    for step in &spec.steps {
        for d in &step.depends_on {
            let _ = writeln!(out, "  \"{d}\" -> \"{}\";", step.name);
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use rubeapi::runink::Step;

    use super::*;

    fn example() -> (Object, Pipeline, PipelineStatus) {
        let step = |name: &str, deps: &[&str]| Step {
            name: name.into(),
            command: "/bin/true".into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        };
        let mut spec = Pipeline {
            mode: Mode::Batch as i32,
            steps: vec![
                step("fetch", &[]),
                step("split", &["fetch"]),
                step("stats", &["fetch"]),
                step("report", &["split", "stats"]),
            ],
            ..Default::default()
        };
        spec.steps[2].skip = true;
        let mut object = object::new("analytics", "wordcount", &spec);
        object.metadata.as_mut().unwrap().generation = 2;
        let state = |name: &str, state: State, attempts, node: &str, message: &str| StepStatus {
            name: name.into(),
            state: state as i32,
            slice: if attempts > 0 {
                format!("wordcount.{name}-{attempts}")
            } else {
                String::new()
            },
            node: node.into(),
            attempts,
            exit_code: None,
            message: message.into(),
            ..Default::default()
        };
        let mut failed = state("stats", State::Failed, 2, "n2", "");
        failed.exit_code = Some(3);
        let status = PipelineStatus {
            phase: Phase::Running as i32,
            steps: vec![
                state("fetch", State::Success, 1, "n1", ""),
                state("split", State::Running, 2, "n2", ""),
                failed,
                state("report", State::Pending, 0, "", "waiting for 'split'"),
            ],
            observed_generation: 2,
        };
        (object, spec, status)
    }

    #[test]
    fn the_table_shows_each_step_with_its_state_and_dependencies() {
        let (object, spec, status) = example();
        expect![[r#"
            pipeline analytics/wordcount BATCH RUNNING (generation 2, observed 2)
            STEP    STATE          ATTEMPTS  NODE  SLICE              AFTER        MESSAGE
            fetch   SUCCESS        1         n1    wordcount.fetch-1  -
            split   RUNNING        2         n2    wordcount.split-2  fetch
            stats   FAILED (skip)  2         n2    wordcount.stats-2  fetch        exit code 3
            report  PENDING        0         -     -                  split,stats  waiting for 'split'
        "#]]
        .assert_eq(&render_table(&object, &spec, &status));
    }

    #[test]
    fn a_parallel_step_shows_how_many_of_its_shards_succeeded() {
        let (object, mut spec, mut status) = example();
        spec.steps[1].parallelism = 4;
        let split = &mut status.steps[1];
        (split.shards, split.shards_succeeded) = (4, 3);
        (split.attempts, split.slice) = (5, "wordcount.split-2.1".into());
        let table = render_table(&object, &spec, &status);
        let row = table.lines().find(|l| l.starts_with("split")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "split",
                "RUNNING",
                "3/4",
                "5",
                "n2",
                "wordcount.split-2.1",
                "fetch"
            ],
            "{table}"
        );
    }

    #[test]
    fn dot_draws_the_dag_coloured_by_state() {
        let (object, spec, status) = example();
        expect![[r#"
            digraph "analytics/wordcount" {
              rankdir=LR;
              node [shape=box, style=filled];
              "fetch" [label="fetch\nSUCCESS", fillcolor=palegreen];
              "split" [label="split\nRUNNING", fillcolor=lightskyblue];
              "stats" [label="stats\nFAILED", fillcolor=salmon];
              "report" [label="report\nPENDING", fillcolor=white];
              "fetch" -> "split";
              "fetch" -> "stats";
              "split" -> "report";
              "stats" -> "report";
            }
        "#]]
        .assert_eq(&render_dot(&object, &spec, &status));
    }

    #[test]
    fn a_pipeline_without_status_shows_dashes() {
        let (object, spec, _) = example();
        let table = render_table(&object, &spec, &PipelineStatus::default());
        assert!(
            table.starts_with("pipeline analytics/wordcount BATCH - (generation 2, observed 0)\n"),
            "{table}"
        );
        assert!(table.contains("\nfetch   -  "), "{table}");
    }
}
