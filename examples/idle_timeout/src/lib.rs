//! Idle timeout with processing-time timers: counts each key's events and, once a key has had no
//! event for `timeout` of processing time (config `{ timeout = "500ms" }`), emits
//! `{"key":…,"events":n}` and forgets the key. Every event moves the key's timer: the previous one
//! is deleted and a new one set `timeout` after the host's clock. Needs a keyed input.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result, Timer, ValueState};

struct IdleTimeout {
    timeout: i64,
    /// The key's events so far and when its timer is due.
    session: ValueState<Session>,
}

#[derive(Serialize, Deserialize, Default)]
struct Session {
    events: u64,
    due: i64,
}

#[derive(Deserialize)]
struct Config {
    timeout: String,
}

#[derive(Serialize)]
struct Idle<'a> {
    key: &'a str,
    events: u64,
}

impl Operator for IdleTimeout {
    fn describe() -> Description {
        Description::new("idle_timeout", env!("CARGO_PKG_VERSION")).value_state("session", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        let timeout = weir_guest::duration_ms(&config.timeout)
            .ok_or_else(|| Error::new(format!("timeout \"{}\" is not a duration such as \"500ms\"", config.timeout)))?;
        Ok(IdleTimeout { timeout, session: ctx.value_state("session")? })
    }

    fn process(&mut self, ctx: &mut Context, _event: &Event) -> Result<()> {
        let mut session = self.session.get(ctx)?.unwrap_or_default();
        if session.events > 0 {
            ctx.delete_processing_time_timer(session.due)?;
        }
        session.events += 1;
        session.due = ctx.processing_time() + self.timeout;
        ctx.register_processing_time_timer(session.due)?;
        self.session.set(ctx, &session)
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let Some(session) = self.session.get(ctx)? else { return Ok(()) };
        self.session.clear(ctx)?;
        let key = String::from_utf8_lossy(timer.key);
        ctx.emit_json(&Idle { key: &key, events: session.events })
    }
}

weir_guest::export_operator!(IdleTimeout);
