//! Which `weir:operator` contract a component was built against, checked before anything else so
//! that a mismatch is reported with both versions instead of as a missing import.
use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract package this host implements.
pub const CONTRACT: &str = "weir:operator";
/// Its version.
pub const CONTRACT_VERSION: &str = "0.4.0";
/// The versions this host serves, newest first: modules built against an older one keep running
/// unchanged (see the README's compatibility promise).
pub const SERVED_VERSIONS: &[&str] = &["0.4.0", "0.3.0", "0.2.0"];

/// A contract version this host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Contract {
    /// `weir:operator@0.2.0`: no time.
    V2,
    /// `weir:operator@0.3.0`: watermarks, timers, state TTL.
    V3,
    /// `weir:operator@0.4.0`: inputs told apart, side outputs, broadcast state.
    V4,
}

impl Contract {
    /// Its version, as the WIT package names it.
    pub(crate) fn version(self) -> &'static str {
        match self {
            Contract::V2 => "0.2.0",
            Contract::V3 => "0.3.0",
            Contract::V4 => "0.4.0",
        }
    }
}

/// What the component's `weir:operator` imports and exports say.
pub(crate) enum ContractCheck {
    Compatible(Contract),
    /// Built against another version of the contract.
    OtherVersion(String),
    /// Does not export `weir:operator/operator` at all; lists what it exports.
    NotAnOperator(Vec<String>),
}

/// Whether two contract versions are compatible: same major, and same minor while major is 0.
fn compatible(a: &str, b: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().ok()).collect::<Vec<_>>();
    match (parts(a).as_slice(), parts(b).as_slice()) {
        ([Some(0), Some(minor_a), ..], [Some(0), Some(minor_b), ..]) => minor_a == minor_b,
        ([Some(major_a), ..], [Some(major_b), ..]) => major_a == major_b,
        _ => false,
    }
}

pub(crate) fn check(engine: &Engine, component: &Component) -> ContractCheck {
    let ty = component.component_type();
    let prefix = format!("{CONTRACT}/");
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let imports = ty.imports(engine).map(|(name, _)| name.to_string());
    let mut exports_operator = false;
    let mut contract = None;
    for name in exports.iter().cloned().chain(imports) {
        let Some((interface, version)) = name.strip_prefix(&prefix).and_then(|rest| rest.split_once('@')) else {
            continue;
        };
        let served = match SERVED_VERSIONS.iter().position(|served| compatible(version, served)) {
            Some(0) => Contract::V4,
            Some(1) => Contract::V3,
            Some(_) => Contract::V2,
            None => return ContractCheck::OtherVersion(version.to_string()),
        };
        // Interfaces of two versions in one component: neither world.
        if contract.is_some_and(|c| c != served) {
            return ContractCheck::OtherVersion(version.to_string());
        }
        contract = Some(served);
        exports_operator |= interface == "operator" && exports.contains(&name);
    }
    match contract.filter(|_| exports_operator) {
        Some(contract) => ContractCheck::Compatible(contract),
        None => ContractCheck::NotAnOperator(exports),
    }
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn versions() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.3", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("x", "0.1.0"));
    }
}
