//! Write a [weir](https://github.com/weir) stream operator in a few lines of Rust.
//!
//! An operator is a type implementing [`Operator`], exported with [`export_operator!`] and built
//! for `wasm32-wasip2`. The host owns all keyed state: declare it in [`Operator::describe`], take
//! typed handles in [`Operator::open`], and read or write it in [`Operator::process`] for the key
//! of the event being processed. Values are stored as JSON (serde), so state written by an
//! operator in one language can be read by the same operator written in another.
//!
//! ```ignore
//! use weir_guest::{Context, Description, Event, OpenContext, Operator, ValueState};
//!
//! struct Count {
//!     count: ValueState<u64>,
//! }
//!
//! impl Operator for Count {
//!     fn describe() -> Description {
//!         Description::new("count", "1.0.0").value_state("count", 1)
//!     }
//!     fn open(ctx: &OpenContext) -> weir_guest::Result<Self> {
//!         Ok(Count { count: ctx.value_state("count")? })
//!     }
//!     fn process(&mut self, ctx: &mut Context, event: &Event) -> weir_guest::Result<()> {
//!         let n = self.count.get(ctx)?.unwrap_or(0) + 1;
//!         self.count.set(ctx, &n)?;
//!         ctx.emit_json(&serde_json::json!({ "count": n }))
//!     }
//! }
//!
//! weir_guest::export_operator!(Count);
//! ```
//!
//! Layers: `bindings` (generated from `wit/`) ← `frame` (the batch wire format) ← `context` and
//! `state` (what operator authors use) ← `runtime` (glue the export macro calls).
#![deny(missing_docs)]

mod context;
mod describe;
mod duration;
mod error;

pub mod log;
#[doc(hidden)]
pub mod runtime;
mod state;
#[cfg(test)]
mod vectors;

pub use context::{Context, Event, OpenContext, TimeDomain, Timer};
pub use describe::{Description, StateKind};
pub use duration::duration_ms;
pub use error::{Error, Result};
pub use state::{BroadcastState, ListState, MapState, ValueState};

/// Generated bindings for `wit/operator.wit`; used by [`export_operator!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weir:operator/operator-world@0.4.0",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "weir_guest::bindings",
    });
}

/// A stream operator. One instance runs per parallel subtask; anything it keeps in fields is a
/// cache that may vanish at any restart, so durable data belongs in declared state.
pub trait Operator: Sized + 'static {
    /// Name, version and declared states. Must not depend on configuration.
    fn describe() -> Description;
    /// Builds the instance from its configuration; an error refuses the job with its message.
    fn open(ctx: &OpenContext) -> Result<Self>;
    /// Handles one event. State handles read and write the state of this event's key.
    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()>;

    /// Handles a due timer the operator set (see [`Context::register_event_time_timer`]). State
    /// handles read and write the timer's key's state; what it emits carries the timer's time as
    /// its timestamp for an event-time timer.
    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let _ = (ctx, timer);
        Ok(())
    }

    /// Rewrites one stored item of state `state` saved under the older schema version
    /// `from_version` (one [`Description::migrates_from`] lists) into the current layout: a
    /// value, a map value, or a list element. Called while saved state is restored, before
    /// `open`; it must depend on nothing but its arguments. An error fails the restore.
    fn migrate(state: &str, from_version: u32, item: &[u8]) -> Result<Vec<u8>> {
        let _ = item;
        Err(Error::new(format!("state '{state}' cannot be migrated from schema version {from_version}")))
    }
}

/// Exports an [`Operator`] type as the component's `weir:operator/operator` implementation.
#[macro_export]
macro_rules! export_operator {
    ($operator:ty) => {
        struct __WeirExport;

        ::std::thread_local! {
            static __WEIR_RUNTIME: ::std::cell::RefCell<Option<$crate::runtime::Runtime<$operator>>> =
                const { ::std::cell::RefCell::new(None) };
        }

        impl $crate::bindings::exports::weir::operator::operator::Guest for __WeirExport {
            fn describe() -> $crate::bindings::weir::operator::types::Description {
                $crate::runtime::describe::<$operator>()
            }

            fn open(
                config: ::std::string::String,
                context: $crate::bindings::weir::operator::types::Context,
            ) -> ::std::result::Result<(), ::std::string::String> {
                __WEIR_RUNTIME.with_borrow_mut(|slot| {
                    *slot = Some($crate::runtime::Runtime::<$operator>::open(config, context)?);
                    Ok(())
                })
            }

            fn migrate(
                state: u32,
                from_version: u32,
                items: ::std::vec::Vec<::std::vec::Vec<u8>>,
            ) -> ::std::result::Result<::std::vec::Vec<::std::vec::Vec<u8>>, ::std::string::String> {
                $crate::runtime::migrate::<$operator>(state, from_version, items)
            }

            fn process_batch(
                batch: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                __WEIR_RUNTIME.with_borrow_mut(|slot| match slot {
                    Some(runtime) => runtime.process_batch(&batch),
                    None => Err("process-batch called before open".to_string()),
                })
            }

            fn on_timers(
                timers: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                __WEIR_RUNTIME.with_borrow_mut(|slot| match slot {
                    Some(runtime) => runtime.on_timers(&timers),
                    None => Err("on-timers called before open".to_string()),
                })
            }
        }

        $crate::bindings::export_raw!(__WeirExport with_types_in $crate::bindings);
    };
}
