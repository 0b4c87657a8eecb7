//! A keyed count that forgets idle keys: `count` with a time-to-live of one second on its state,
//! so a key that has had no event for a second starts again from 1. Emits
//! `{"key":"<key>","count":<n>}` per event. Needs a keyed input (`input = "hash"`).
use serde::Serialize;
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct RecentCount {
    count: ValueState<u64>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for RecentCount {
    fn describe() -> Description {
        Description::new("recent_count", env!("CARGO_PKG_VERSION")).value_state("count", 1).time_to_live(1_000)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(RecentCount { count: ctx.value_state("count")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        let key = String::from_utf8_lossy(event.key.unwrap_or_default());
        ctx.emit_json(&Output { key: &key, count })
    }
}

weir_guest::export_operator!(RecentCount);
