//! How ructl prints objects, events and outcomes.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use rubeapi::object::ObjectExt;
use rubeapi::rube::{DeleteResponse, Object, Outcome, PutResponse, WatchEvent};
use rubeapi::{Registry, Scope, json, text};

use crate::Format;

pub struct Output {
    registry: Registry,
}

impl Output {
    pub fn new(registry: Registry) -> Output {
        Output { registry }
    }

    /// One line per put: `api.systemd.Unit system/indexer created (revision 3)`.
    pub fn put(&self, response: &PutResponse) {
        let object = response.object.clone().unwrap_or_default();
        println!(
            "{} {} {} (revision {})",
            object.type_name(),
            object.display_name(),
            outcome_word(response.outcome()),
            object.revision()
        );
    }

    pub fn deleted(&self, response: &DeleteResponse) {
        let object = response.object.clone().unwrap_or_default();
        println!(
            "{} {} {} (revision {})",
            object.type_name(),
            object.display_name(),
            outcome_word(response.outcome()),
            object.revision()
        );
    }

    /// Objects in a format; `single` prints one object bare rather than as a list.
    pub fn objects(&self, objects: &[Object], format: Format, single: bool) -> Result<()> {
        match format {
            Format::Textproto => print!("{}", text::print_objects(&self.registry, objects)),
            Format::Json if single => println!("{}", json::to_json(&self.registry, &objects[0])?),
            Format::Json => {
                let items = objects
                    .iter()
                    .map(|o| json::to_json(&self.registry, o).map(|j| indent(&j)))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.is_empty() {
                    println!("[]");
                } else {
                    println!("[\n  {}\n]", items.join(",\n  "));
                }
            }
            Format::Table => {
                let status = |o: &Object| status_summary(&self.registry, o);
                print!("{}", table(objects, SystemTime::now(), status));
            }
        }
        Ok(())
    }

    /// One watch event: textproto followed by a blank line, or one line of JSON.
    pub fn event(&self, event: &WatchEvent, format: Format) -> Result<()> {
        match format {
            Format::Json => {
                let pretty = json::to_json(&self.registry, event)?;
                let value: serde_json::Value = serde_json::from_str(&pretty)?;
                println!("{value}");
            }
            _ => println!("{}", text::print_event(&self.registry, event)),
        }
        Ok(())
    }

    pub fn types(&self, registry: &Registry) {
        println!("{:<24} {:<11} STATUS", "TYPE", "SCOPE");
        for kind in registry.kinds() {
            let scope = match kind.scope {
                Scope::Namespaced => "namespaced",
                Scope::Cluster => "cluster",
            };
            let status = kind.status.as_ref().map_or("-", |s| s.full_name());
            println!("{:<24} {:<11} {status}", kind.name(), scope);
        }
    }
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::DeletionPending => "marked for deletion (finalizers pending)",
        Outcome::Deleted => "deleted",
        Outcome::Unspecified => "done",
    }
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// The one word of an object's status a table shows: its `phase`, `condition` or
/// `active_state` field (slices, pipelines; nodes; units), else `-`.
pub fn status_summary(registry: &Registry, object: &Object) -> String {
    let summary = || -> Option<String> {
        let status = object.status.as_ref()?;
        let descriptor = registry.kind(object.type_name()).ok()?.status?;
        let message =
            prost_reflect::DynamicMessage::decode(descriptor.clone(), status.value.as_slice())
                .ok()?;
        ["phase", "condition", "active_state"]
            .iter()
            .find_map(|name| {
                let field = descriptor.get_field_by_name(name)?;
                match &*message.get_field(&field) {
                    prost_reflect::Value::EnumNumber(n) => field
                        .kind()
                        .as_enum()
                        .and_then(|e| e.get_value(*n))
                        .map(|v| v.name().to_owned()),
                    prost_reflect::Value::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                }
            })
    };
    summary().unwrap_or_else(|| "-".to_owned())
}

/// A table like kubectl's: one row per object.
pub fn table(objects: &[Object], now: SystemTime, status: impl Fn(&Object) -> String) -> String {
    let mut rows = vec![[
        "TYPE".to_owned(),
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "STATUS".to_owned(),
        "GENERATION".to_owned(),
        "REVISION".to_owned(),
        "AGE".to_owned(),
    ]];
    for object in objects {
        let metadata = object.metadata.clone().unwrap_or_default();
        let age = metadata
            .creation_timestamp
            .and_then(|t| SystemTime::try_from(t).ok())
            .and_then(|created| now.duration_since(created).ok())
            .map_or_else(|| "-".to_owned(), age);
        rows.push([
            object.type_name().to_owned(),
            metadata.namespace,
            metadata.name,
            status(object),
            metadata.generation.to_string(),
            metadata.revision.to_string(),
            age,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Ages as kubectl prints them: 45s, 12m, 3h, 2d.
fn age(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use prost_types::Timestamp;
    use rubeapi::object;
    use rubeapi::runink::Herd;

    #[test]
    fn tables_align_columns() {
        let mut herd = object::new("", "analytics", &Herd::default());
        let m = herd.metadata.as_mut().unwrap();
        m.generation = 2;
        m.revision = 17;
        m.creation_timestamp = Some(Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + 3 * 3600);
        let mut slice = object::new("analytics", "hello", &rubeapi::runink::Slice::default());
        slice.status = Some(object::pack(&rubeapi::runink::SliceStatus {
            phase: rubeapi::runink::slice_status::Phase::Running as i32,
            ..Default::default()
        }));
        let registry = Registry::builtin();
        let status = |o: &Object| status_summary(&registry, o);
        expect![[r#"
            TYPE           NAMESPACE   NAME        STATUS    GENERATION   REVISION   AGE
            runink.Herd                analytics   -         2            17         3h
            runink.Slice   analytics   hello       RUNNING   0            0          -
        "#]]
        .assert_eq(&table(&[herd, slice], now, status));
    }
}
