//! Timers that re-register themselves for a time already reached, as a runaway guest would: each
//! event sets a timer for its key (config `domain`: `event`, at the event's time, or
//! `processing`, at the current processing time), and each timer that fires emits a line and
//! sets itself again at the time it fired at (event time) or at the current processing time.
//! With `far`, each event sets 2,000 event-time timers far in the future instead (a guest filling
//! the host's timer queue), which fire once, at the end of time.
use serde::Deserialize;
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, TimeDomain, Timer};

#[derive(Deserialize)]
struct Config {
    domain: String,
}

struct Rearm {
    domain: String,
}

impl Rearm {
    fn arm(&self, ctx: &mut Context, event_time: i64) -> Result<()> {
        match self.domain.as_str() {
            "event" => ctx.register_event_time_timer(event_time),
            "far" => (0..2000).try_for_each(|i| ctx.register_event_time_timer((1 << 50) + event_time * 2000 + i)),
            _ => ctx.register_processing_time_timer(ctx.processing_time()),
        }
    }
}

impl Operator for Rearm {
    fn describe() -> Description {
        Description::new("rearm", "0.1.0")
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Rearm { domain: ctx.config::<Config>()?.domain })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.arm(ctx, event.timestamp.unwrap_or(0))
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let domain = if timer.domain == TimeDomain::EventTime { "event" } else { "processing" };
        ctx.emit(format!("{{\"fired\":{},\"domain\":\"{domain}\"}}", timer.time).as_bytes());
        match self.domain.as_str() {
            "far" => Ok(()),
            _ => self.arm(ctx, timer.time),
        }
    }
}

weir_guest::export_operator!(Rearm);
