//! A broken release of `count`: it declares the same state, so an upgrade to it is accepted,
//! and then traps on its first event. For trying rollbacks: `weir upgrade JOB --operator
//! count-per-user=count_broken.wasm` swaps it in, it fails, and the job goes back to the module
//! it ran before, from the upgrade's savepoint. With config `{ traps-on = "alice" }` it traps on
//! alice's events only and counts every other key's as `count` does: for trying quarantine
//! (`examples/count_broken/quarantine.toml`).
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct CountBroken {
    count: ValueState<u64>,
    traps_on: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    traps_on: Option<String>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for CountBroken {
    fn describe() -> Description {
        Description::new("count", env!("CARGO_PKG_VERSION")).value_state("count", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let traps_on = ctx.config::<Config>()?.traps_on;
        Ok(CountBroken { count: ctx.value_state("count")?, traps_on })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let key = String::from_utf8_lossy(event.key.unwrap_or_default());
        match self.traps_on.as_deref() {
            None => panic!("count_broken traps on every event, as it was built to"),
            Some(poisoned) if poisoned == key => panic!("count_broken traps on the events of key {key}"),
            Some(_) => {}
        }
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        ctx.emit_json(&Output { key: &key, count })
    }
}

weir_guest::export_operator!(CountBroken);
