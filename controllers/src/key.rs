//! [`Key`]: names one object. The cache, the work queue and the controller's `observe` and
//! `execute` are all keyed by it. Nothing here does I/O.

use std::fmt;

use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;

/// Names one object: its type's full name, its namespace ("" when cluster-scoped) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub type_name: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(type_name: &str, namespace: &str, name: &str) -> Key {
        Key {
            type_name: type_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of `object`.
    pub fn of(object: &Object) -> Key {
        Key::new(object.type_name(), object.namespace(), object.name())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.type_name, self.name)
        } else {
            write!(f, "{} {}/{}", self.type_name, self.namespace, self.name)
        }
    }
}
