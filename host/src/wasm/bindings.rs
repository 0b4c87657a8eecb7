//! The one place `bindgen!` runs over `wit/`: the contract this host implements (`v3`,
//! `weir:operator@0.3.0`) and the older one it still serves (`v2`, `wit/v0.2.0/`). Everything
//! else imports from here; `guest.rs` puts both behind one type.
pub(crate) mod v3 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:operator/operator-world@0.3.0",
        imports: { default: trappable },
    });
}

pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "weir:operator/operator-world@0.2.0",
        imports: { default: trappable },
    });
}
