//! The `count` example's keyed running count, failing on purpose: in attempts below config
//! `attempts`, it traps on the event that brings any key's count to config `trap-at`. A job with
//! a restart strategy restarts from its latest checkpoint and goes past that event in the next
//! attempt.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    trap_at: u64,
    attempts: u32,
}

struct FlakyCount {
    count: ValueState<u64>,
    trap_at: Option<u64>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for FlakyCount {
    fn describe() -> Description {
        Description::new("count", "0.1.0").value_state("count", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        let trap_at = (ctx.attempt() < config.attempts).then_some(config.trap_at);
        Ok(FlakyCount { count: ctx.value_state("count")?, trap_at })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        if Some(count) == self.trap_at {
            unreachable!("flaky_count traps at count {count}, as configured");
        }
        self.count.set(ctx, &count)?;
        let key = event.key.unwrap_or_default();
        let key = std::str::from_utf8(key).map_or_else(|_| String::from_utf8_lossy(key), Into::into);
        ctx.emit_json(&Output { key: &key, count })
    }
}

weir_guest::export_operator!(FlakyCount);
