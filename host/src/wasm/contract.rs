//! Which `weir:operator` contract a component was built against, checked before anything else so
//! that a mismatch is reported with both versions instead of as a missing import.
use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract package this host implements.
pub const CONTRACT: &str = "weir:operator";
/// Its version.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// What the component's `weir:operator` imports and exports say.
pub(crate) enum ContractCheck {
    Compatible,
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
    for name in exports.iter().cloned().chain(imports) {
        let Some((interface, version)) = name.strip_prefix(&prefix).and_then(|rest| rest.split_once('@')) else {
            continue;
        };
        if !compatible(version, CONTRACT_VERSION) {
            return ContractCheck::OtherVersion(version.to_string());
        }
        exports_operator |= interface == "operator" && exports.contains(&name);
    }
    if exports_operator { ContractCheck::Compatible } else { ContractCheck::NotAnOperator(exports) }
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
