//! A keyed count with a poison key, for quarantine (`on-error = "quarantine"`): per event it
//! counts the event's page for its key in map state `pages` (a `state` import, written at once),
//! then, for the key that config `key` names, misbehaves as config `how` says: `panic` (a trap),
//! `error` (an error of its own), `spin` (past its call deadline) or `hog` (past its memory
//! limit). Otherwise it counts the event in value state `count` and emits
//! `{"key":…,"count":n,"page":…,"page-count":m}`. A host that applied a failed call's map writes
//! would count some pages twice. An event with a timestamp sets an event-time timer then, which
//! emits `{"key":…,"timer":t}` when it fires, or with `how = "timer"` panics for the named key.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Event, MapState, OpenContext, Operator, Result, Timer, ValueState};

#[derive(Deserialize)]
struct Config {
    key: String,
    #[serde(default = "panic")]
    how: String,
}

fn panic() -> String {
    "panic".to_string()
}

#[derive(Deserialize)]
struct Click {
    /// A generator's events have none.
    #[serde(default)]
    page: String,
}

#[derive(Serialize)]
struct Fired<'a> {
    key: &'a str,
    timer: i64,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
    page: &'a str,
    #[serde(rename = "page-count")]
    page_count: u64,
}

struct Poison {
    config: Config,
    count: ValueState<u64>,
    pages: MapState<String, u64>,
}

impl Operator for Poison {
    fn describe() -> Description {
        Description::new("poison", "0.1.0").value_state("count", 1).map_state("pages", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Poison { config: ctx.config()?, count: ctx.value_state("count")?, pages: ctx.map_state("pages")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let click: Click = serde_json::from_slice(event.value).map_err(|e| weir_guest::Error::new(e.to_string()))?;
        let page_count = self.pages.get(ctx, &click.page)?.unwrap_or(0) + 1;
        self.pages.insert(ctx, &click.page, &page_count)?;
        let key = String::from_utf8_lossy(event.key.unwrap_or_default());
        if key == self.config.key && self.config.how != "timer" {
            match self.config.how.as_str() {
                "error" => return Err(format!("refused key {key}").into()),
                "spin" => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "hog" => {
                    let mut hoard = Vec::new();
                    loop {
                        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                    }
                }
                _ => panic!("poisoned by key {key}"),
            }
        }
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        if let Some(time) = event.timestamp {
            ctx.register_event_time_timer(time)?;
        }
        ctx.emit_json(&Output { key: &key, count, page: &click.page, page_count })
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        let key = String::from_utf8_lossy(timer.key);
        if key == self.config.key && self.config.how == "timer" {
            panic!("poisoned timer of key {key}");
        }
        ctx.emit_json(&Fired { key: &key, timer: timer.time })
    }
}

weir_guest::export_operator!(Poison);
