//! Types registered at run time: `rube.Type` objects carry FileDescriptorSets, and every message
//! in them with the `(rube.kind)` option becomes a kind that admission validates like a built-in
//! one. The registry is rebuilt from the stored `rube.Type` objects whenever one changes here,
//! and a watch keeps it in step with changes made through other apiservers on the same store.

use std::sync::Arc;

use rubeapi::Registry;
use rubeapi::object::ObjectExt;
use rubeapi::rube::{Object, Type};
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::store::{Key, Store};

/// The kind that registers types.
pub const TYPE_KIND: &str = "rube.Type";

fn types_filter() -> Filter {
    Filter {
        type_name: TYPE_KIND.into(),
        ..Default::default()
    }
}

fn descriptor_set(object: &Object) -> Result<Vec<u8>, Error> {
    let spec: Type = object
        .spec_as()
        .map_err(|e| Error::Invalid(format!("{}: {e}", Key::of(object))))?;
    Ok(spec.file_descriptor_set)
}

/// Registry errors name the type already.
fn descriptor_error(error: rubeapi::Error) -> Error {
    match error {
        rubeapi::Error::Descriptor(message) => Error::Invalid(message),
        other => Error::Invalid(other.to_string()),
    }
}

/// Checks that `object` (a `rube.Type`) links with the built-in types and every other
/// registered type, and defines at least one kind.
pub async fn admit_type<S: Store>(
    store: &S,
    registry: &Registry,
    object: &Object,
) -> Result<(), Error> {
    let listing = store.list(types_filter()).await?;
    let mut sets: Vec<(String, Vec<u8>)> = Vec::new();
    for other in listing.objects.iter().filter(|o| o.name() != object.name()) {
        sets.push((other.name().to_owned(), descriptor_set(other)?));
    }
    sets.push((object.name().to_owned(), descriptor_set(object)?));
    let borrowed: Vec<(&str, &[u8])> = sets
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (_, kinds) = registry.build_extra(&borrowed).map_err(descriptor_error)?;
    if kinds.last().is_none_or(Vec::is_empty) {
        return Err(Error::Invalid(format!(
            "type {}: its files define no kind: mark a message with option (rube.kind) = {{ scope: NAMESPACED }}",
            object.name()
        )));
    }
    Ok(())
}

/// Refuses to delete a type while objects of its kinds exist.
pub async fn admit_type_delete<S: Store>(
    store: &S,
    registry: &Registry,
    name: &str,
) -> Result<(), Error> {
    let key = Key::new(TYPE_KIND, "", name);
    let object = store.get(key).await?;
    let set = descriptor_set(&object)?;
    let (_, kinds) = registry
        .build_extra(&[(name, set.as_slice())])
        .map_err(descriptor_error)?;
    for kind in kinds.into_iter().flatten() {
        let filter = Filter {
            type_name: kind.clone(),
            ..Default::default()
        };
        let count = store.list(filter).await?.objects.len();
        if count > 0 {
            return Err(Error::Invalid(format!(
                "type {name} still has {count} object(s) of kind {kind}: delete them first"
            )));
        }
    }
    Ok(())
}

/// Rebuilds the registry's run-time types from every stored `rube.Type`.
pub async fn refresh<S: Store>(store: &S, registry: &Registry) -> Result<(), Error> {
    let listing = store.list(types_filter()).await?;
    let mut sets = Vec::new();
    for object in &listing.objects {
        sets.push((object.name().to_owned(), descriptor_set(object)?));
    }
    let borrowed: Vec<(&str, &[u8])> = sets
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    registry
        .set_extra(&borrowed)
        .map_err(|e| Error::Internal(format!("stored types do not link: {e}")))
}

/// Keeps the registry in step with `rube.Type` objects, whoever writes them, until `cancel`.
/// The task holds the store until it ends: await it before reopening the store.
pub fn spawn_sync<S: Store>(
    store: Arc<S>,
    registry: Registry,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::follow::spawn(
        store,
        vec![types_filter()],
        "registered types",
        cancel,
        move |store| {
            let registry = registry.clone();
            async move { refresh(&*store, &registry).await }
        },
    )
}
