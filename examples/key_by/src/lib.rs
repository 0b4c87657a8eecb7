//! Sets each event's key to the value of the JSON field named by config `field` (a string as is,
//! any other JSON value as its JSON text); the value passes through unchanged.
use serde::Deserialize;
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
}

struct KeyBy {
    field: String,
}

impl Operator for KeyBy {
    fn describe() -> Description {
        Description::new("key_by", env!("CARGO_PKG_VERSION"))
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        Ok(KeyBy { field: config.field })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let record: serde_json::Map<String, serde_json::Value> = event.json()?;
        let key = match record.get(&self.field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(Error::new(format!(
                    "event has no field '{}': {}",
                    self.field,
                    String::from_utf8_lossy(event.value)
                )));
            }
        };
        ctx.emit_event(Some(key.as_bytes()), event.value, event.timestamp);
        Ok(())
    }
}

weir_guest::export_operator!(KeyBy);
