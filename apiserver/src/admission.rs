//! Admission: what must hold before anything is stored. Pure checks against the type registry;
//! every refusal names the field and the problem.

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use prost_types::Any;
use rubeapi::rube::Object;
use rubeapi::{Registry, Scope, type_name_of_url, type_url};

use crate::Error;
use crate::store::Key;

/// Limits admission enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest encoded object accepted.
    pub max_object_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 1024 * 1024,
        }
    }
}

/// Checks an object for a put and normalizes it: type URLs get the `rube/` prefix, the status is
/// dropped (it is written only through UpdateStatus), server-owned metadata is cleared.
pub fn admit_object(
    registry: &Registry,
    limits: &Limits,
    object: &mut Object,
) -> Result<Key, Error> {
    let size = object.encoded_len();
    if size > limits.max_object_bytes {
        return Err(Error::TooLarge {
            what: "the object".into(),
            size,
            limit: limits.max_object_bytes,
        });
    }
    let Some(spec) = object.spec.as_mut() else {
        return Err(Error::Invalid("the object has no spec".into()));
    };
    let type_name = type_name_of_url(&spec.type_url).to_owned();
    if type_name.is_empty() {
        return Err(Error::Invalid("the spec has no type".into()));
    }
    let kind = registry
        .kind(&type_name)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    spec.type_url = type_url(&type_name);
    decode_strict(&kind.descriptor, spec, "spec")?;

    let metadata = object
        .metadata
        .as_mut()
        .ok_or_else(|| Error::Invalid("the object has no metadata".into()))?;
    check_scope(kind.scope, &type_name, &metadata.namespace)?;
    check_name(&metadata.name)?;
    for (key, value) in &metadata.labels {
        check_label(key, value)?;
    }
    for (i, owner) in metadata.owner_references.iter().enumerate() {
        if owner.r#type.is_empty() || owner.name.is_empty() {
            return Err(Error::Invalid(format!(
                "metadata.owner_references[{i}]: type and name are required"
            )));
        }
    }
    if metadata
        .owner_references
        .iter()
        .filter(|o| o.controller)
        .count()
        > 1
    {
        return Err(Error::Invalid(
            "metadata.owner_references: at most one owner may be the controller".into(),
        ));
    }
    // Semantic rules last: they may rely on a valid name and scope.
    if let Some(spec) = &object.spec {
        rubeapi::validate::spec(&metadata.name, spec).map_err(|e| match e.field.as_str() {
            "" => Error::Invalid(format!("spec: {}", e.problem)),
            field => Error::Invalid(format!("spec.{field}: {}", e.problem)),
        })?;
    }
    metadata.uid.clear();
    metadata.revision = 0;
    metadata.create_revision = 0;
    metadata.generation = 0;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    object.status = None;
    Ok(Key::of(object))
}

/// Checks the key of a get, delete or status update.
pub fn admit_key(
    registry: &Registry,
    type_name: &str,
    namespace: &str,
    name: &str,
) -> Result<Key, Error> {
    if type_name.is_empty() {
        return Err(Error::Invalid("no type given".into()));
    }
    let kind = registry
        .kind(type_name)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    check_scope(kind.scope, type_name, namespace)?;
    check_name(name)?;
    Ok(Key::new(type_name, namespace, name))
}

/// Checks a status for an object of `key`'s type: it must be the kind's status message.
pub fn admit_status(
    registry: &Registry,
    limits: &Limits,
    key: &Key,
    status: &mut Any,
) -> Result<(), Error> {
    let size = status.encoded_len();
    if size > limits.max_object_bytes {
        return Err(Error::TooLarge {
            what: "the status".into(),
            size,
            limit: limits.max_object_bytes,
        });
    }
    let kind = registry
        .kind(&key.type_name)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let found = type_name_of_url(&status.type_url).to_owned();
    let descriptor = match kind.status {
        Some(expected) if expected.full_name() != found => {
            return Err(Error::Invalid(format!(
                "the status of a {} must be a {}, not '{found}'",
                key.type_name,
                expected.full_name()
            )));
        }
        Some(expected) => expected,
        None => registry
            .message(&found)
            .map_err(|e| Error::Invalid(format!("status: {e}")))?,
    };
    status.type_url = type_url(&found);
    decode_strict(&descriptor, status, "status")
}

/// Decodes an Any as `descriptor` and refuses fields the type does not have.
fn decode_strict(descriptor: &MessageDescriptor, any: &Any, what: &str) -> Result<(), Error> {
    let message =
        DynamicMessage::decode(descriptor.clone(), any.value.as_slice()).map_err(|e| {
            Error::Invalid(format!(
                "{what} does not decode as {}: {e}",
                descriptor.full_name()
            ))
        })?;
    if let Some(path) = unknown_field(&message, what) {
        return Err(Error::Invalid(format!(
            "{path} is not a field of {}: is the spec of another type?",
            descriptor.full_name()
        )));
    }
    Ok(())
}

/// The path of the first field the message's type does not know, if any.
fn unknown_field(message: &DynamicMessage, path: &str) -> Option<String> {
    if let Some(field) = message.unknown_fields().next() {
        return Some(format!("{path}: field number {}", field.number()));
    }
    for (field, value) in message.fields() {
        let here = format!("{path}.{}", field.name());
        let found = match value {
            Value::Message(m) => unknown_field(m, &here),
            Value::List(items) => items.iter().enumerate().find_map(|(i, v)| match v {
                Value::Message(m) => unknown_field(m, &format!("{here}[{i}]")),
                _ => None,
            }),
            Value::Map(entries) => entries.values().find_map(|v| match v {
                Value::Message(m) => unknown_field(m, &here),
                _ => None,
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn check_scope(scope: Scope, type_name: &str, namespace: &str) -> Result<(), Error> {
    match scope {
        Scope::Cluster if !namespace.is_empty() => Err(Error::Invalid(format!(
            "metadata.namespace: {type_name} is cluster-scoped and takes no namespace, got '{namespace}'"
        ))),
        Scope::Namespaced if namespace.is_empty() => Err(Error::Invalid(format!(
            "metadata.namespace: {type_name} lives in a namespace (a Herd's name), and none was given"
        ))),
        Scope::Namespaced => check_dns_label(namespace, "metadata.namespace"),
        Scope::Cluster => Ok(()),
    }
}

/// Names are DNS subdomains (RFC 1123): lowercase labels joined by dots, 253 characters at most.
fn check_name(name: &str) -> Result<(), Error> {
    check_dns_name("metadata.name", name)
}

/// `name`, the value of `field`, is a DNS subdomain (RFC 1123), as object names are.
///
/// # Errors
/// [`Error::Invalid`] naming the field and what is wrong.
pub fn check_dns_name(field: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Invalid(format!("{field} is empty")));
    }
    if name.len() > 253 {
        return Err(Error::Invalid(format!(
            "{field} is {} characters long, over the limit of 253",
            name.len()
        )));
    }
    for label in name.split('.') {
        check_dns_label(label, field).map_err(|_| {
            Error::Invalid(format!(
                "{field} '{name}' is not a DNS name: use lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ))
        })?;
    }
    Ok(())
}

fn check_dns_label(label: &str, field: &str) -> Result<(), Error> {
    let bytes = label.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field} '{label}' is not a DNS label: use at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        )))
    }
}

fn check_label(key: &str, value: &str) -> Result<(), Error> {
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    let value_ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if key_ok && value_ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "metadata.labels: '{key}: {value}' is not a valid label (keys and values use letters, digits, '-', '_', '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::object;
    use rubeapi::runink::{Herd, HerdStatus, Slice, SliceStatus};

    fn admit(mut object: Object) -> Result<Key, String> {
        admit_object(&Registry::builtin(), &Limits::default(), &mut object)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_a_valid_object_and_clears_server_fields() {
        let mut o = object::new("herd-1", "step.a", &Slice::default());
        o.metadata.as_mut().unwrap().revision = 99;
        o.status = Some(object::pack(&SliceStatus::default()));
        let key = admit_object(&Registry::builtin(), &Limits::default(), &mut o).unwrap();
        assert_eq!(key.to_string(), "runink.Slice herd-1/step.a");
        assert_eq!(o.metadata.unwrap().revision, 0);
        assert_eq!(o.status, None);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(Object, &str)> = vec![
            (
                object::new("h", "", &Slice::default()),
                "metadata.name is empty",
            ),
            (
                object::new("h", "Bad_Name", &Slice::default()),
                "metadata.name 'Bad_Name' is not a DNS name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            ),
            (
                object::new("", "s", &Slice::default()),
                "metadata.namespace: runink.Slice lives in a namespace (a Herd's name), and none was given",
            ),
            (
                object::new("h", "x", &Herd::default()),
                "metadata.namespace: runink.Herd is cluster-scoped and takes no namespace, got 'h'",
            ),
            (
                Object {
                    metadata: Some(Default::default()),
                    spec: Some(Any {
                        type_url: "rube/no.Such".into(),
                        value: vec![],
                    }),
                    status: None,
                },
                "unknown type 'no.Such'",
            ),
            (
                Object {
                    metadata: Some(Default::default()),
                    spec: None,
                    status: None,
                },
                "the object has no spec",
            ),
        ];
        for (object, expected) in cases {
            assert_eq!(admit(object).unwrap_err(), expected);
        }
    }

    #[test]
    fn a_spec_of_another_type_is_refused() {
        // A Slice's bytes under a Herd's type URL: field 3 (env) is no field of Herd's.
        let mut spec = Slice::default();
        spec.env.insert("A".into(), "b".into());
        let mut o = object::new("", "h", &Herd::default());
        o.spec.as_mut().unwrap().value = spec.encode_to_vec();
        assert_eq!(
            admit(o).unwrap_err(),
            "spec: field number 3 is not a field of runink.Herd: is the spec of another type?"
        );
    }

    #[test]
    fn oversized_objects_are_refused() {
        let spec = Slice {
            command: "x".repeat(2 * 1024 * 1024),
            ..Default::default()
        };
        let err = admit(object::new("h", "s", &spec)).unwrap_err();
        assert!(
            err.starts_with("the object is 2097")
                && err.ends_with("bytes, over the limit of 1048576 bytes"),
            "{err}"
        );
    }

    #[test]
    fn status_must_be_the_kinds_status_type() {
        let registry = Registry::builtin();
        let key = Key::new("runink.Slice", "h", "s");
        let mut wrong = object::pack(&HerdStatus::default());
        let err = admit_status(&registry, &Limits::default(), &key, &mut wrong).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the status of a runink.Slice must be a runink.SliceStatus, not 'runink.HerdStatus'"
        );
        let mut right = object::pack(&SliceStatus::default());
        admit_status(&registry, &Limits::default(), &key, &mut right).unwrap();
    }
}
