//! Version 2 of the `count` example: the same keyed running count, with a field telling which
//! version emitted each line: `{"key":"<key>","count":<n>,"v":2}`, and a new state layout.
//!
//! Version 1 stores each key's count as a bare JSON number (`5`); version 2 stores an object
//! (`{"count":5}`), so that later versions can add fields beside the count. It declares the
//! state with schema version 2 and a migration from schema version 1, which the host runs on
//! every saved count when version 1's state is restored into it. Swap it in under a running
//! `count` job with `weir upgrade JOB --operator count-per-user=count_v2.wasm`: the counts go on
//! where version 1 left them.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result, ValueState};

/// Schema version 2 of the `count` state.
#[derive(Serialize, Deserialize)]
struct Counter {
    count: u64,
}

struct Count {
    counter: ValueState<Counter>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
    v: u32,
}

impl Operator for Count {
    fn describe() -> Description {
        Description::new("count", env!("CARGO_PKG_VERSION")).value_state("count", 2).migrates_from([1])
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Count { counter: ctx.value_state("count")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.counter.get(ctx)?.map_or(0, |c| c.count) + 1;
        self.counter.set(ctx, &Counter { count })?;
        let key = event.key.unwrap_or_default();
        let key = std::str::from_utf8(key).map_or_else(|_| String::from_utf8_lossy(key), Into::into);
        ctx.emit_json(&Output { key: &key, count, v: 2 })
    }

    /// Schema version 1 is a bare JSON number.
    fn migrate(state: &str, from_version: u32, item: &[u8]) -> Result<Vec<u8>> {
        let count: u64 = serde_json::from_slice(item)
            .map_err(|e| Error::new(format!("state '{state}' schema version {from_version}: not a count ({e})")))?;
        serde_json::to_vec(&Counter { count }).map_err(|e| Error::new(e.to_string()))
    }
}

weir_guest::export_operator!(Count);
