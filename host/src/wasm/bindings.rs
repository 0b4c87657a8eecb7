//! The one place `bindgen!` runs over `wit/`: the contract this host implements (`v4`,
//! `weir:operator@0.4.0`) and the older ones it still serves (`v3`, `wit/v0.3.0/`; `v2`,
//! `wit/v0.2.0/`). Everything else imports from here; `guest.rs` puts them behind one type.
pub(crate) mod v4 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:operator/operator-world@0.4.0",
        imports: { default: trappable },
    });
}

pub(crate) mod v3 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.3.0",
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
