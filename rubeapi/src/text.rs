//! Textproto: the format users write and read.
//!
//! An input holds one `Object` or several, separated by lines that hold only `---`. Specs use Any
//! expansion: `spec { [rube/api.systemd.Unit] { description: "hey" } }`. Every error names the
//! line and column in the whole input, so `ructl put < file` can point at the mistake.

use prost::Message;
use prost_reflect::{
    DynamicMessage, MessageDescriptor, ReflectMessage, text_format::FormatOptions,
};

use crate::error::Location;
use crate::rube::{Object, ObjectRef, WatchEvent};
use crate::{Error, Registry, type_name_of_url, type_url};

/// A part of an input between `---` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    /// Byte offset of the document in the whole input.
    pub offset: usize,
    pub text: &'a str,
}

/// Splits an input at lines that hold only `---` (surrounding spaces allowed).
pub fn split_documents(input: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    for line in input.split_inclusive('\n') {
        if line.trim() == "---" {
            documents.push(Document {
                offset: start,
                text: &input[start..line_start],
            });
            start = line_start + line.len();
        }
        line_start += line.len();
    }
    documents.push(Document {
        offset: start,
        text: &input[start..],
    });
    documents
}

/// Parses every object in `input`. Documents with nothing but comments and blanks are skipped;
/// an input with no object at all is an error.
///
/// # Errors
/// `Syntax` with the line and column of the first problem: malformed textproto, an unknown field
/// or `[rube/...]` type, a spec whose type is not a kind, or an object without a spec.
pub fn parse_objects(registry: &Registry, input: &str) -> Result<Vec<Object>, Error> {
    let descriptor = registry.message("rube.Object")?;
    let mut objects = Vec::new();
    for document in split_documents(input) {
        if is_blank(document.text) {
            continue;
        }
        let message = parse_dynamic(descriptor.clone(), input, document)?;
        let mut object: Object = transcode(&message)?;
        check_object(registry, input, document, &mut object)?;
        objects.push(object);
    }
    if objects.is_empty() {
        return Err(syntax(input, input.len(), "no object in input".to_owned()));
    }
    Ok(objects)
}

/// Parses exactly one object.
pub fn parse_object(registry: &Registry, input: &str) -> Result<Object, Error> {
    let mut objects = parse_objects(registry, input)?;
    if objects.len() != 1 {
        return Err(syntax(
            input,
            0,
            format!("expected one object, found {}", objects.len()),
        ));
    }
    Ok(objects.remove(0))
}

/// Parses an object reference as `ructl delete` takes it:
/// `type = "api.systemd.Unit", metadata { namespace: "system", name: "indexer" }`.
///
/// Outside strings and comments, `=` is read as `:`, so both the seed's form and plain textproto
/// work.
pub fn parse_object_ref(registry: &Registry, input: &str) -> Result<ObjectRef, Error> {
    let descriptor = registry.message("rube.ObjectRef")?;
    let normalized = equals_as_colons(input);
    let document = Document {
        offset: 0,
        text: &normalized,
    };
    let message = parse_dynamic(descriptor, &normalized, document)?;
    let object_ref: ObjectRef = transcode(&message)?;
    if object_ref.r#type.is_empty() {
        return Err(syntax(input, 0, "the reference names no type".to_owned()));
    }
    registry.kind(&object_ref.r#type).map_err(|e| {
        syntax(
            input,
            find(input, &object_ref.r#type).unwrap_or(0),
            e.to_string(),
        )
    })?;
    Ok(object_ref)
}

/// Prints one object as pretty textproto with expanded specs.
pub fn print_object(registry: &Registry, object: &Object) -> String {
    print_message(registry, object)
}

/// Prints objects separated by `---` lines, so the output can be fed back to `ructl put`.
pub fn print_objects(registry: &Registry, objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| print_object(registry, o))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Prints a watch event: `update { ... }`, `delete { ... }` or `bookmark { ... }`.
pub fn print_event(registry: &Registry, event: &WatchEvent) -> String {
    print_message(registry, event)
}

/// Prints any generated message of this crate as pretty textproto.
pub fn print_message<M: Message + prost::Name>(registry: &Registry, message: &M) -> String {
    let Ok(descriptor) = registry.message(&M::full_name()) else {
        return format!("# cannot print {}: unknown type\n", M::full_name());
    };
    match DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) {
        Ok(dynamic) => format_dynamic(&dynamic),
        Err(e) => format!("# cannot print {}: {e}\n", M::full_name()),
    }
}

/// Parses `input` as textproto of the built-in message `M` (not an object: a configuration
/// file); errors carry line and column.
pub fn parse_message<M: Message + Default + prost::Name>(
    registry: &Registry,
    input: &str,
) -> Result<M, Error> {
    let descriptor = registry.message(&M::full_name())?;
    let document = Document {
        offset: 0,
        text: input,
    };
    transcode(&parse_dynamic(descriptor, input, document)?)
}

/// Pretty textproto of a dynamic message, with a trailing newline.
pub fn format_dynamic(message: &DynamicMessage) -> String {
    let options = FormatOptions::new().pretty(true).expand_any(true);
    let mut text = message.to_text_format_with_options(&options);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn parse_dynamic(
    descriptor: MessageDescriptor,
    input: &str,
    document: Document<'_>,
) -> Result<DynamicMessage, Error> {
    DynamicMessage::parse_text_format(descriptor, document.text).map_err(|e| {
        let offset = error_offset(&e).unwrap_or(document.text.len());
        syntax(input, document.offset + offset, e.to_string())
    })
}

fn error_offset(error: &prost_reflect::text_format::ParseError) -> Option<usize> {
    use miette::Diagnostic;
    error.labels()?.next().map(|label| label.offset())
}

fn transcode<M: Message + Default>(message: &DynamicMessage) -> Result<M, Error> {
    message.transcode_to::<M>().map_err(|e| Error::Decode {
        type_name: message.descriptor().full_name().to_owned(),
        reason: e.to_string(),
    })
}

/// Structural checks that need no server: a spec is present and its type is a kind. Type URLs
/// are normalized to the `rube/` prefix.
fn check_object(
    registry: &Registry,
    input: &str,
    document: Document<'_>,
    object: &mut Object,
) -> Result<(), Error> {
    let start = document.offset + first_token(document.text);
    let Some(spec) = object.spec.as_mut() else {
        return Err(syntax(
            input,
            start,
            "the object has no spec: write spec { [rube/TYPE] { ... } }".to_owned(),
        ));
    };
    let name = type_name_of_url(&spec.type_url).to_owned();
    if let Err(e) = registry.kind(&name) {
        let at = find(document.text, &name).map_or(start, |i| document.offset + i);
        return Err(syntax(input, at, e.to_string()));
    }
    spec.type_url = type_url(&name);
    if let Some(status) = object.status.as_mut() {
        status.type_url = type_url(type_name_of_url(&status.type_url));
    }
    Ok(())
}

fn syntax(input: &str, offset: usize, message: String) -> Error {
    Error::Syntax {
        location: Location::of_offset(input, offset),
        message,
    }
}

fn find(haystack: &str, needle: &str) -> Option<usize> {
    haystack.find(needle)
}

/// True when a document holds nothing but whitespace and `#` comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    })
}

/// Byte offset of the first character that is neither blank nor inside a comment.
fn first_token(text: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            return offset + (line.len() - trimmed.len());
        }
        offset += line.len();
    }
    0
}

/// Replaces `=` with `:` outside string literals and comments. One byte for one byte, so error
/// positions still point into the original input.
fn equals_as_colons(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    for c in input.chars() {
        let mapped = match (quote, comment) {
            (_, true) => {
                if c == '\n' {
                    comment = false;
                }
                c
            }
            (Some(q), false) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                c
            }
            (None, false) => match c {
                '"' | '\'' => {
                    quote = Some(c);
                    c
                }
                '#' => {
                    comment = true;
                    c
                }
                '=' => ':',
                _ => c,
            },
        };
        out.push(mapped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::systemd::{OomPolicy, Restart, ServiceType, Unit};
    use expect_test::expect;

    const SEED_UNIT: &str = include_str!("../../examples/system/indexer.textproto");

    fn error_text(result: Result<impl std::fmt::Debug, Error>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn parses_the_seed_example_verbatim() {
        let registry = Registry::builtin();
        let object = parse_object(&registry, SEED_UNIT).unwrap();
        let metadata = object.metadata.clone().unwrap();
        assert_eq!(
            (metadata.namespace.as_str(), metadata.name.as_str()),
            ("system", "indexer")
        );
        let spec = object.spec.unwrap();
        assert_eq!(spec.type_url, "rube/api.systemd.Unit");
        let unit = Unit::decode(spec.value.as_slice()).unwrap();
        assert_eq!(unit.description, "hey");
        assert_eq!(unit.doc_url, ["file://"]);
        assert_eq!(unit.wants, ["graphical.target"]);
        assert!(!unit.enabled);
        let service = unit.service.unwrap();
        assert_eq!(service.title, "Don't run this without consulting me firtst");
        assert_eq!(service.r#type(), ServiceType::Forking);
        assert_eq!(service.pid_file, "/blablabla/pid");
        assert_eq!(service.exec.clone().unwrap().start, ["echo \"Hey You!\""]);
        let time = service.time.unwrap();
        assert_eq!(
            (time.restart, time.timeout, time.limit, time.watchdog),
            (60, 30, 3600, 60)
        );
        assert_eq!(service.restart(), Restart::OnFailure);
        let status = service.status.clone().unwrap();
        assert_eq!(status.success, [0, 1, 2]);
        assert_eq!(status.prevent_restart, [66]);
        assert_eq!(service.oom_policy(), OomPolicy::Kill);
    }

    #[test]
    fn printing_and_parsing_round_trips() {
        let registry = Registry::builtin();
        let object = parse_object(&registry, SEED_UNIT).unwrap();
        let printed = print_object(&registry, &object);
        let again = parse_object(&registry, &printed).unwrap();
        assert_eq!(object, again);
        expect![[r#"
            metadata {
              namespace: "system"
              name: "indexer"
            }
            spec {
              [rube/api.systemd.Unit] {
                description: "hey"
                doc_url: ["file://"]
                wants: ["graphical.target"]
                service {
                  title: "Don\'t run this without consulting me firtst"
                  type: FORKING
                  pid_file: "/blablabla/pid"
                  exec {
                    start: ["echo \"Hey You!\""]
                  }
                  time {
                    restart: 60
                    timeout: 30
                    limit: 3600
                    watchdog: 60
                  }
                  restart: ON_FAILURE
                  status {
                    success: [0, 1, 2]
                    prevent_restart: [66]
                  }
                  oom_policy: KILL
                }
              }
            }
        "#]]
        .assert_eq(&printed);
    }

    #[test]
    fn several_objects_separated_by_dashes() {
        let registry = Registry::builtin();
        let input = format!("{SEED_UNIT}---\n# only a comment\n---\n{SEED_UNIT}\n---\n");
        assert_eq!(parse_objects(&registry, &input).unwrap().len(), 2);
    }

    #[test]
    fn errors_name_line_and_column_in_the_whole_input() {
        let registry = Registry::builtin();
        let second = "metadata { name: \"x\" }\nspec {\n  [rube/api.systemd.Unit] {\n    descriptoin: \"typo\"\n  }\n}\n";
        let input = format!("{SEED_UNIT}---\n{second}");
        let first_lines = SEED_UNIT.lines().count() + 1;
        assert_eq!(
            error_text(parse_objects(&registry, &input)),
            format!(
                "{}:5: field 'descriptoin' not found for message 'api.systemd.Unit'",
                first_lines + 4
            )
        );
    }

    #[test]
    fn bad_inputs_get_clear_errors() {
        let registry = Registry::builtin();
        let cases = [
            (
                "metadata { name: \"x\" ",
                "1:22: expected '}' or a field name, but reached end of input",
            ),
            (
                "metadata { name: \"x\" }\nspec { [rube/no.Such] { } }",
                "2:8: message type 'no.Such' not found",
            ),
            (
                "metadata { name: \"x\" }\nspec { [rube/runink.Step] { name: \"a\" } }",
                "2:14: type 'runink.Step' is not a kind: it has no (rube.kind) option",
            ),
            (
                "metadata { name: \"x\" }\nspec { [rube/runink.Herd] { wants: \"y\" } }",
                "2:29: field 'wants' not found for message 'runink.Herd'",
            ),
            (
                "# just a comment\nmetadata { name: \"x\" }",
                "2:1: the object has no spec: write spec { [rube/TYPE] { ... } }",
            ),
            ("", "1:1: no object in input"),
            (
                "metadata { name: 5 }",
                "1:18: expected a string, but found '5'",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                error_text(parse_objects(&registry, input)),
                expected,
                "input: {input}"
            );
        }
    }

    #[test]
    fn object_refs_accept_the_seed_form() {
        let registry = Registry::builtin();
        let r = parse_object_ref(
            &registry,
            r#"type = "api.systemd.Unit", metadata { namespace: "system", name: "indexer" }"#,
        )
        .unwrap();
        let m = r.metadata.unwrap();
        assert_eq!(
            (r.r#type.as_str(), m.namespace.as_str(), m.name.as_str()),
            ("api.systemd.Unit", "system", "indexer")
        );
        // An `=` inside a string stays.
        let r = parse_object_ref(
            &registry,
            r#"type: "api.systemd.Unit" metadata { name: "a=b" }"#,
        )
        .unwrap();
        assert_eq!(r.metadata.unwrap().name, "a=b");
        assert_eq!(
            error_text(parse_object_ref(&registry, r#"type = "no.Such""#)),
            "1:9: unknown type 'no.Such'"
        );
    }

    #[test]
    fn documents_split_only_on_whole_dash_lines() {
        let docs = split_documents("a\n---\nb --- c\n  ---  \nd");
        let texts: Vec<&str> = docs.iter().map(|d| d.text).collect();
        assert_eq!(texts, ["a\n", "b --- c\n", "d"]);
        assert_eq!(docs[2].offset, "a\n---\nb --- c\n  ---  \n".len());
    }
}
