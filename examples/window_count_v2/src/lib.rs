//! Version 2 of `window_count`, for upgrade tests: the open windows are stored as
//! `[{"start":…,"count":…}]` (schema 2) instead of `[[start,count]]` (schema 1), migrated from
//! schema 1 when it takes over a running job's state; emitted windows say `"v":2`. The timers
//! version 1 set fire here.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result, Timer, ValueState};

struct WindowCount {
    size: i64,
    windows: ValueState<Vec<Open>>,
}

/// An open window (schema 2).
#[derive(Serialize, Deserialize)]
struct Open {
    start: i64,
    count: u64,
}

#[derive(Deserialize)]
struct Config {
    size: String,
}

#[derive(Serialize)]
struct Window<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    count: u64,
    v: u32,
}

impl Operator for WindowCount {
    fn describe() -> Description {
        Description::new("window_count", env!("CARGO_PKG_VERSION")).value_state("windows", 2).migrates_from([1])
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        let size = weir_guest::duration_ms(&config.size)
            .ok_or_else(|| Error::new(format!("size \"{}\" is not a duration", config.size)))?;
        Ok(WindowCount { size, windows: ctx.value_state("windows")? })
    }

    fn migrate(_state: &str, _from_version: u32, item: &[u8]) -> Result<Vec<u8>> {
        let v1: Vec<(i64, u64)> = serde_json::from_slice(item)?;
        let v2: Vec<Open> = v1.into_iter().map(|(start, count)| Open { start, count }).collect();
        Ok(serde_json::to_vec(&v2)?)
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let timestamp = event.timestamp.ok_or_else(|| Error::new("an event without a timestamp"))?;
        let start = timestamp - timestamp.rem_euclid(self.size);
        let last = start + self.size - 1;
        if ctx.current_watermark().is_some_and(|w| last <= w) {
            return Ok(());
        }
        let mut windows = self.windows.get(ctx)?.unwrap_or_default();
        match windows.binary_search_by_key(&start, |w| w.start) {
            Ok(i) => windows[i].count += 1,
            Err(i) => {
                windows.insert(i, Open { start, count: 1 });
                ctx.register_event_time_timer(last)?;
            }
        }
        self.windows.set(ctx, &windows)
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let start = timer.time + 1 - self.size;
        let mut windows = self.windows.get(ctx)?.unwrap_or_default();
        let Ok(i) = windows.binary_search_by_key(&start, |w| w.start) else { return Ok(()) };
        let Open { count, .. } = windows.remove(i);
        match windows.is_empty() {
            true => self.windows.clear(ctx)?,
            false => self.windows.set(ctx, &windows)?,
        }
        let key = String::from_utf8_lossy(timer.key);
        ctx.emit_json(&Window { key: &key, start, end: start + self.size, count, v: 2 })
    }
}

weir_guest::export_operator!(WindowCount);
