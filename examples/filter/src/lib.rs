//! Keeps JSON events whose boolean field named by config `field` is true; drops the rest.
use serde::Deserialize;
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
}

struct Filter {
    field: String,
}

impl Operator for Filter {
    fn describe() -> Description {
        Description::new("filter", env!("CARGO_PKG_VERSION"))
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        Ok(Filter { field: config.field })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let record: serde_json::Map<String, serde_json::Value> = event.json().map_err(|e| {
            Error::new(format!("event is not a JSON object ({e}): {}", String::from_utf8_lossy(event.value)))
        })?;
        if record.get(&self.field) == Some(&serde_json::Value::Bool(true)) {
            ctx.emit(event.value);
        }
        Ok(())
    }
}

weir_guest::export_operator!(Filter);
