//! The `count` example with a deliberate bug for one user: it keeps the same counts, but writes
//! user `u7`'s one too high. Shadowed beside `count`, exactly `u7`'s lines differ.
use serde::Serialize;
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct OffByOne {
    count: ValueState<u64>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for OffByOne {
    fn describe() -> Description {
        Description::new("count", "1.0.1-off-by-one").value_state("count", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(OffByOne { count: ctx.value_state("count")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        let key = std::str::from_utf8(event.key.unwrap_or_default()).unwrap_or_default();
        let written = if key == "u7" { count + 1 } else { count };
        ctx.emit_json(&Output { key, count: written })
    }
}

weir_guest::export_operator!(OffByOne);
