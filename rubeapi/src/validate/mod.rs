//! Semantic checks of built-in kinds beyond what the schema says: a pipeline without cycles, a
//! unit whose fields do not contradict each other. Pure; the apiserver's admission calls
//! [`spec`] for every put, and controllers may call the per-kind functions on what they read.
//!
//! Every refusal is an [`Invalid`] naming the field path and the problem.

use std::fmt;

use prost::Message;
use prost_types::Any;

use crate::type_name_of_url;

pub mod pipeline;
pub mod slice;
pub mod unit;

/// Why a spec is refused: the field (`steps[2].depends_on[0]`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks the spec of an object named `name` for the kinds that have semantic rules; other
/// kinds pass. The spec is decoded here; a spec that does not decode is refused.
pub fn spec(name: &str, spec: &Any) -> Result<(), Invalid> {
    match type_name_of_url(&spec.type_url) {
        "runink.Pipeline" => {
            let spec: crate::runink::Pipeline = decode(spec)?;
            pipeline::validate(&spec)?;
            slice::pipe_buffer("pipe_buffer_bytes", spec.pipe_buffer_bytes)
        }
        "runink.Slice" => slice::validate(&decode(spec)?),
        "api.systemd.Unit" => unit::validate(name, &decode(spec)?),
        _ => Ok(()),
    }
}

fn decode<M: Message + Default>(spec: &Any) -> Result<M, Invalid> {
    M::decode(spec.value.as_slice()).map_err(|e| Invalid::new("spec", e.to_string()))
}
