//! Native operators compiled into the host, selected in a job file with `builtin = "<name>"`.
//! They exist to measure what the Wasm sandbox costs: each does exactly what an example Wasm
//! operator does, on the same runtime and state backend.
mod keyed_count;

use crate::runtime::OperatorFactory;
use crate::state::{Backends, StateDescriptor, StateRestore};

/// Names accepted by `builtin = "…"`.
pub const NAMES: &[&str] = &["keyed-count"];

/// The factory of builtin operator `name`, if there is one. `keyed` tells whether its input is
/// partitioned by key.
pub fn factory(
    name: &str,
    keyed: bool,
    restore: Option<StateRestore>,
    backends: Backends,
) -> Option<Box<dyn OperatorFactory>> {
    match name {
        "keyed-count" => Some(Box::new(keyed_count::KeyedCountFactory { keyed, restore, backends })),
        _ => None,
    }
}

/// The states builtin `name` declares, if there is such a builtin.
pub fn states(name: &str) -> Option<Vec<StateDescriptor>> {
    match name {
        "keyed-count" => Some(keyed_count::states()),
        _ => None,
    }
}
