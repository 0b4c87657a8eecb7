//! Tumbling event-time window count: counts each key's events per window of `size` (config
//! `{ size = "10s" }`) and emits `{"key":…,"start":<ms>,"end":<ms>,"count":n}` once the watermark
//! passes the window's end (an event-time timer at `end - 1`, as Flink's window operator fires
//! at the window's max timestamp). Events of windows already emitted are late: they go, as they
//! came, to the side output `late` (Flink's `sideOutputLateData`), which a job may read as
//! `"<uid>.late"` or leave unread. Needs a keyed input (`input = "hash"`) and event timestamps
//! (`timestamp-field` on a file source).
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result, Timer, ValueState};

struct WindowCount {
    /// Window length in milliseconds.
    size: i64,
    /// The key's open windows: (start, count), in start order. A value state, not a map: it
    /// travels in the batch frames, so an event costs no host call.
    windows: ValueState<Vec<(i64, u64)>>,
    /// The current key's windows, read into this one list for every event (no allocation).
    current: Vec<(i64, u64)>,
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
}

impl Operator for WindowCount {
    fn describe() -> Description {
        Description::new("window_count", env!("CARGO_PKG_VERSION")).value_state("windows", 1).side_output("late")
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        let size = weir_guest::duration_ms(&config.size).ok_or_else(|| {
            Error::new(format!("size \"{}\" is not a duration such as \"10s\" or \"500ms\"", config.size))
        })?;
        Ok(WindowCount { size, windows: ctx.value_state("windows")?, current: Vec::new() })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let timestamp = event.timestamp.ok_or_else(|| {
            Error::new("an event without a timestamp: window_count needs event time (timestamp-field on the source)")
        })?;
        let start = timestamp - timestamp.rem_euclid(self.size);
        let last = start + self.size - 1;
        if ctx.current_watermark().is_some_and(|w| last <= w) {
            return ctx.emit_to("late", event.value); // its window has been emitted
        }
        let windows = &mut self.current;
        if !self.windows.get_into(ctx, windows)? {
            windows.clear();
        }
        match windows.binary_search_by_key(&start, |&(s, _)| s) {
            Ok(i) => windows[i].1 += 1,
            Err(i) => {
                windows.insert(i, (start, 1));
                ctx.register_event_time_timer(last)?;
            }
        }
        self.windows.set(ctx, windows)
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let start = timer.time + 1 - self.size;
        let mut windows = self.windows.get(ctx)?.unwrap_or_default();
        let Ok(i) = windows.binary_search_by_key(&start, |&(s, _)| s) else { return Ok(()) };
        let (_, count) = windows.remove(i);
        match windows.is_empty() {
            true => self.windows.clear(ctx)?,
            false => self.windows.set(ctx, &windows)?,
        }
        let key = String::from_utf8_lossy(timer.key);
        ctx.emit_json(&Window { key: &key, start, end: start + self.size, count })
    }
}

weir_guest::export_operator!(WindowCount);
