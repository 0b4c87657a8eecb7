//! The one place `bindgen!` runs over `wit/`; everything else imports from here.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:operator/operator-world",
    imports: { default: trappable },
});

pub(crate) use self::weir::operator::types;
