//! Sleeps for an hour in `describe` (a WASI wait): loading it must end at describe's deadline,
//! whether `weir run` loads it, a server validates its upload, or a restarted server resumes a
//! job that runs it.
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result};

struct SleepyDescribe;

impl Operator for SleepyDescribe {
    fn describe() -> Description {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Description::new("sleepy", "0.1.0")
    }

    fn open(_ctx: &OpenContext) -> Result<Self> {
        Ok(SleepyDescribe)
    }

    fn process(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }
}

weir_guest::export_operator!(SleepyDescribe);
