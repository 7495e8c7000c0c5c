//! Protobuf JSON for objects: the second format, for scripts and tools that speak JSON.
//! Specs are written as `{"@type": "rube/api.systemd.Unit", ...}`.

use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};

use crate::{Error, Registry};

/// Any generated message of this crate as pretty JSON.
pub fn to_json<M: Message + prost::Name>(
    registry: &Registry,
    message: &M,
) -> Result<String, Error> {
    let dynamic = to_dynamic(registry, message)?;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    dynamic
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| Error::Json(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::Json(e.to_string()))
}

/// Parses a generated message of this crate from JSON.
pub fn from_json<M: Message + prost::Name + Default>(
    registry: &Registry,
    input: &str,
) -> Result<M, Error> {
    let descriptor = registry.message(&M::full_name())?;
    let mut deserializer = serde_json::Deserializer::from_str(input);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .map_err(|e| Error::Json(e.to_string()))?;
    deserializer.end().map_err(|e| Error::Json(e.to_string()))?;
    dynamic.transcode_to::<M>().map_err(|e| Error::Decode {
        type_name: M::full_name(),
        reason: e.to_string(),
    })
}

fn to_dynamic<M: Message + prost::Name>(
    registry: &Registry,
    message: &M,
) -> Result<DynamicMessage, Error> {
    let descriptor = registry.message(&M::full_name())?;
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).map_err(|e| {
        Error::Decode {
            type_name: M::full_name(),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rube::Object;
    use crate::text;

    #[test]
    fn objects_round_trip_through_json() {
        let registry = Registry::builtin();
        let object = text::parse_object(
            &registry,
            include_str!("../../examples/system/indexer.textproto"),
        )
        .unwrap();
        let json = to_json(&registry, &object).unwrap();
        assert!(
            json.contains(r#""@type": "rube/api.systemd.Unit""#),
            "{json}"
        );
        assert!(json.contains(r#""type": "FORKING""#), "{json}");
        let again: Object = from_json(&registry, &json).unwrap();
        assert_eq!(object, again);
    }

    #[test]
    fn bad_json_is_an_error() {
        let registry = Registry::builtin();
        let err = from_json::<Object>(&registry, r#"{"metadata": {"nmae": "x"}}"#).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
