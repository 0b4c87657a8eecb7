//! Counts clicks per key (a page, say) and raises an alert when a key gets more clicks than the
//! rules allow, the rules arriving on a stream of their own: Flink's broadcast state pattern
//! (`KeyedBroadcastProcessFunction`), in event time.
//!
//! Inputs, in the job file's order: `clicks`, keyed (by page in `job.toml`), and `rules`, read by
//! broadcast: every subtask sees every rule (`{"ts":…,"key":…,"max_clicks":n}`, in force from its
//! `ts` for that key, or for every key without `key`) and keeps them all in the broadcast state
//! `rules`, the same in each. A click waits until the watermark passes its time, then counts: the
//! main output gets `{"key":…,"ts":…,"count":n}`, and when `n` is over the `max_clicks` of the
//! rule in force for its key at the click (the latest one; at the same time, the key's own over
//! the one for every key), the side output `alerts` gets `{"key":…,"ts":…,"count":n,
//! "max_clicks":m}`. Both inputs hold the watermark back, so every rule up to a click's time has
//! arrived when it counts.
use serde::{Deserialize, Serialize};
use weir_guest::{BroadcastState, Context, Description, Error, Event, OpenContext, Operator, Result, Timer, ValueState};

struct Rules {
    /// Every rule: max clicks by the key it is for ([`EVERY_KEY`]: all) and the time it is in
    /// force from.
    rules: BroadcastState<(String, i64), u64>,
    /// The key's clicks so far, counted.
    count: ValueState<u64>,
    /// The times of the key's clicks waiting for the watermark.
    pending: ValueState<Vec<i64>>,
}

/// The key of a rule for every key.
const EVERY_KEY: &str = "*";

#[derive(Deserialize)]
struct Rule {
    key: Option<String>,
    max_clicks: u64,
}

#[derive(Serialize)]
struct Counted<'a> {
    key: &'a str,
    ts: i64,
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_clicks: Option<u64>,
}

impl Operator for Rules {
    fn describe() -> Description {
        Description::new("rules", env!("CARGO_PKG_VERSION"))
            .broadcast_state("rules", 1)
            .value_state("count", 1)
            .value_state("pending", 1)
            .input("clicks")
            .input("rules")
            .side_output("alerts")
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Rules {
            rules: ctx.broadcast_state("rules")?,
            count: ctx.value_state("count")?,
            pending: ctx.value_state("pending")?,
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let ts = event.timestamp.ok_or_else(|| {
            Error::new(format!("an event of '{}' without a timestamp: set timestamp-field on its source", ctx.input()))
        })?;
        match ctx.input() {
            "rules" => {
                let rule: Rule = event.json()?;
                let key = rule.key.unwrap_or_else(|| EVERY_KEY.to_string());
                self.rules.insert(ctx, &(key, ts), &rule.max_clicks)
            }
            _ => {
                let mut pending = self.pending.get(ctx)?.unwrap_or_default();
                pending.push(ts);
                self.pending.set(ctx, &pending)?;
                ctx.register_event_time_timer(ts)
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let pending = self.pending.get(ctx)?.unwrap_or_default();
        let (mut due, waiting): (Vec<i64>, Vec<i64>) = pending.into_iter().partition(|&ts| ts <= timer.time);
        due.sort_unstable();
        let key = String::from_utf8_lossy(timer.key);
        let rules: Vec<(i64, bool, u64)> = self
            .rules
            .entries(ctx)?
            .into_iter()
            .filter(|((for_key, _), _)| *for_key == key || for_key == EVERY_KEY)
            .map(|((for_key, from), max)| (from, for_key != EVERY_KEY, max))
            .collect();
        let mut count = self.count.get(ctx)?.unwrap_or(0);
        for ts in due {
            count += 1;
            let in_force = rules.iter().filter(|(from, ..)| *from <= ts).max_by_key(|(from, own, _)| (*from, *own));
            ctx.emit_json(&Counted { key: &key, ts, count, max_clicks: None })?;
            if let Some(&(.., max_clicks)) = in_force.filter(|(.., max)| count > *max) {
                ctx.emit_json_to("alerts", &Counted { key: &key, ts, count, max_clicks: Some(max_clicks) })?;
            }
        }
        self.count.set(ctx, &count)?;
        match waiting.is_empty() {
            true => self.pending.clear(ctx),
            false => self.pending.set(ctx, &waiting),
        }
    }
}

weir_guest::export_operator!(Rules);
