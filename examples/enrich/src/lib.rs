//! Enriches clicks with the profile their user had when they clicked: an event-time temporal join
//! of two keyed streams (Flink's `KeyedCoProcessFunction`, or an event-time temporal table join).
//!
//! Inputs, in the job file's order: `clicks` and `profiles`, both keyed by user. A profile
//! (`{"ts":…,"user":…,"plan":…}`) is kept as a version valid from its `ts`; a click waits in
//! state until the watermark passes its time (an event-time timer), then goes out with the plan
//! of the newest profile version at or before it: `{"ts":…,"user":…,"page":…,"plan":…}`. A click
//! its user had no profile for by then goes to the side output `unmatched`, as it came. Because
//! both inputs hold the watermark back, every profile version up to a click's time has arrived
//! when it is joined: the output does not depend on how the two streams interleave.
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result, Timer, ValueState};

struct Enrich {
    /// The key's profile versions, (valid from, plan), oldest first.
    profiles: ValueState<Vec<(i64, String)>>,
    /// The key's clicks waiting for the watermark, (time, click as it came), in arrival order:
    /// each click is kept as its JSON text, not as a string holding it (no escaping to store it,
    /// no unescaping to read it back).
    pending: ValueState<Vec<(i64, Box<RawValue>)>>,
}

#[derive(Deserialize)]
struct Profile {
    plan: String,
}

#[derive(Deserialize)]
struct Click<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    page: Cow<'a, str>,
}

#[derive(Serialize)]
struct Enriched<'a> {
    ts: i64,
    user: &'a str,
    page: &'a str,
    plan: &'a str,
}

impl Operator for Enrich {
    fn describe() -> Description {
        Description::new("enrich", env!("CARGO_PKG_VERSION"))
            .value_state("profiles", 1)
            .value_state("pending", 1)
            .input("clicks")
            .input("profiles")
            .side_output("unmatched")
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Enrich { profiles: ctx.value_state("profiles")?, pending: ctx.value_state("pending")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let ts = event.timestamp.ok_or_else(|| {
            Error::new(format!("an event of '{}' without a timestamp: set timestamp-field on its source", ctx.input()))
        })?;
        match ctx.input() {
            "profiles" => {
                let profile: Profile = event.json()?;
                let mut versions = self.profiles.get(ctx)?.unwrap_or_default();
                let at = versions.partition_point(|(from, _)| *from <= ts);
                versions.insert(at, (ts, profile.plan));
                self.profiles.set(ctx, &versions)
            }
            _ => {
                let click = std::str::from_utf8(event.value).map_err(|_| Error::new("a click that is not UTF-8 text"))?;
                let click = RawValue::from_string(click.to_string())?;
                let mut pending = self.pending.get(ctx)?.unwrap_or_default();
                pending.push((ts, click));
                self.pending.set(ctx, &pending)?;
                ctx.register_event_time_timer(ts)
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let mut pending = self.pending.get(ctx)?.unwrap_or_default();
        let versions = self.profiles.get(ctx)?.unwrap_or_default();
        let (due, waiting): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(ts, _)| *ts <= timer.time);
        for (ts, click) in &due {
            let valid = versions.partition_point(|(from, _)| from <= ts);
            match valid.checked_sub(1).map(|i| &versions[i].1) {
                Some(plan) => {
                    let Click { user, page } = serde_json::from_str(click.get())?;
                    ctx.emit_json(&Enriched { ts: *ts, user: &user, page: &page, plan })?
                }
                None => ctx.emit_to("unmatched", click.get().as_bytes())?,
            }
        }
        match waiting.is_empty() {
            true => self.pending.clear(ctx)?,
            false => self.pending.set(ctx, &waiting)?,
        }
        // Versions older than the one valid now are needed by no click to come (none is earlier
        // than the watermark).
        let valid = versions.partition_point(|(from, _)| *from <= timer.time);
        if valid > 1 {
            self.profiles.set(ctx, &versions[valid - 1..].to_vec())?;
        }
        Ok(())
    }
}

weir_guest::export_operator!(Enrich);
