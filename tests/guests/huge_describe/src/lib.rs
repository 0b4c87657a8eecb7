//! Describes itself with a 20 MiB name and 200,000 declared states: the host refuses it at once,
//! saying what is too large, instead of storing and showing it (or checking it in quadratic time).
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result};

struct HugeDescribe;

impl Operator for HugeDescribe {
    fn describe() -> Description {
        let mut description = Description::new("n".repeat(20 << 20), "0.1.0");
        for i in 0..200_000 {
            description = description.value_state(&format!("state-{i}"), 1);
        }
        description
    }

    fn open(_ctx: &OpenContext) -> Result<Self> {
        Ok(HugeDescribe)
    }

    fn process(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }
}

weir_guest::export_operator!(HugeDescribe);
