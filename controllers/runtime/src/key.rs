//! [`Key`]: names one object. The cache, the work queue and the controller's `observe` and
//! `execute` are all keyed by it. It is `rubeapi`'s, shared with the apiserver.

pub use rubeapi::object::Key;
