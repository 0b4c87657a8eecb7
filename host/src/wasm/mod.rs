//! Operators as WebAssembly components: the engine (compilation, cache, epoch ticker), the
//! contract check, the host side of the `weir:operator` imports, the batch frames and the
//! [`Operator`](crate::runtime::Operator) that calls a guest.
//!
//! Layering: depends on `runtime` and `state`. The one `bindgen!` run lives in `bindings`.
mod bindings;
mod canary;
mod contract;
mod engine;
mod frame;
mod guest;
mod guest_output;
mod host;
mod instance;
mod operator;
pub mod quarantine;
pub mod replay;
mod shadow;
pub mod trial;
mod undo;
mod wasi;
pub mod worker;

pub use canary::CanaryFactory;
pub use contract::{CONTRACT, CONTRACT_VERSION};
pub use engine::{Description, ModuleError, ModuleProblem, OperatorModule, WasmEngine};
pub use operator::{GUEST_TRAPPED, SandboxLimits, WasmOperatorFactory};
