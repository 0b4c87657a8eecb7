//! A broken release of `count`: it declares the same state, so an upgrade to it is accepted,
//! and then traps on its first event. For trying rollbacks: `weir upgrade JOB --operator
//! count-per-user=count_broken.wasm` swaps it in, it fails, and the job goes back to the module
//! it ran before, from the upgrade's savepoint.
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct CountBroken {
    _count: ValueState<u64>,
}

impl Operator for CountBroken {
    fn describe() -> Description {
        Description::new("count", env!("CARGO_PKG_VERSION")).value_state("count", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(CountBroken { _count: ctx.value_state("count")? })
    }

    fn process(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        panic!("count_broken traps on every event, as it was built to")
    }
}

weir_guest::export_operator!(CountBroken);
