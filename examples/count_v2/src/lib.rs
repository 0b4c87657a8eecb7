//! Version 2 of the `count` example: the same keyed running count, over the same state, with a
//! field telling which version emitted each line: `{"key":"<key>","count":<n>,"v":2}`. Swap it in
//! under a running `count` job with `weir upgrade JOB --operator count-per-user=count_v2.wasm`:
//! the counts go on where version 1 left them.
use serde::Serialize;
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct Count {
    count: ValueState<u64>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
    v: u32,
}

impl Operator for Count {
    fn describe() -> Description {
        Description::new("count", env!("CARGO_PKG_VERSION")).value_state("count", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Count { count: ctx.value_state("count")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        let key = event.key.unwrap_or_default();
        let key = std::str::from_utf8(key).map_or_else(|_| String::from_utf8_lossy(key), Into::into);
        ctx.emit_json(&Output { key: &key, count, v: 2 })
    }
}

weir_guest::export_operator!(Count);
