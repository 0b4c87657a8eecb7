//! Declares the `count` example's state with schema version 2 and a migration from version 1
//! that fails on every odd count (and writes even ones as version 2's `{"count":n}`): swapped in
//! for `count`, its trial names the odd counts it cannot read, and without the trial the restore
//! fails and the upgrade is rolled back with the migration's message.
use weir_guest::{Context, Description, Error, Event, OpenContext, Operator, Result};

struct BadMigration;

impl Operator for BadMigration {
    fn describe() -> Description {
        Description::new("count", "2.0.0-bad").value_state("count", 2).migrates_from([1])
    }

    fn open(_ctx: &OpenContext) -> Result<Self> {
        Ok(BadMigration)
    }

    fn process(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }

    fn migrate(_state: &str, _from_version: u32, item: &[u8]) -> Result<Vec<u8>> {
        let text = String::from_utf8_lossy(item);
        match text.parse::<u64>() {
            Ok(n) if n % 2 == 0 => Ok(format!("{{\"count\":{n}}}").into_bytes()),
            _ => Err(Error::new(format!("this build cannot read {text}"))),
        }
    }
}

weir_guest::export_operator!(BadMigration);
