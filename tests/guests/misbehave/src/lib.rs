//! Misbehaves on its first event as config `do` says: `spin` loops forever, `sleep` sleeps for an
//! hour (a WASI poll on a timer), `hog` allocates without bound, `hoard-state` writes 100 map
//! entries of 1 MB each per event into host state, `line-break` emits a value with a line break
//! in it, `huge-error` fails with a 20 MiB message, `foreign-slot` asks the host for state of a
//! key it was not given, `dawdle` passes every event on after 100 ms (a slow operator that
//! barriers queue behind), `emit-huge` emits a value of 17 MiB (once), `chatter` writes a line to
//! stdout and one to stderr, then fails with an error of its own, `hoard-broadcast` writes 1 MB
//! entries into broadcast state for every event (from any input: the host says which it may).
use serde::Deserialize;
use weir_guest::{BroadcastState, Context, Description, Event, MapState, OpenContext, Operator, Result};

#[derive(Deserialize)]
struct Config {
    r#do: String,
}

struct Misbehave {
    what: String,
    hoard: MapState<u32, String>,
    shared: BroadcastState<u64, String>,
    emitted: bool,
    events: u64,
}

impl Operator for Misbehave {
    fn describe() -> Description {
        Description::new("misbehave", "0.1.0").map_state("m", 1).broadcast_state("b", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        let what = ctx.config::<Config>()?.r#do;
        Ok(Misbehave { what, hoard: ctx.map_state("m")?, shared: ctx.broadcast_state("b")?, emitted: false, events: 0 })
    }

    fn process(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        match self.what.as_str() {
            "dawdle" => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                _ctx.emit(_event.value);
                Ok(())
            }
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "huge-error" => Err(weir_guest::Error::new("e".repeat(20 << 20))),
            "emit-huge" if !self.emitted => {
                self.emitted = true;
                _ctx.emit(&vec![b'x'; 17 << 20]);
                Ok(())
            }
            "emit-huge" => Ok(()),
            "line-break" => {
                _ctx.emit(b"one event\nthat reads as two");
                Ok(())
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(())
            }
            "hoard-state" => {
                let megabyte = "x".repeat(1 << 20);
                for i in 0..100u32 {
                    self.hoard.insert(_ctx, &i, &megabyte)?;
                }
                Ok(())
            }
            "hog" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "foreign-slot" => {
                weir_guest::bindings::weir::operator::state::map_get(99, 0, b"x");
                Ok(())
            }
            "hoard-broadcast" => {
                self.events += 1;
                self.shared.insert(_ctx, &self.events, &"x".repeat(1 << 20))
            }
            "chatter" => {
                println!("looking at key {}", String::from_utf8_lossy(_event.key.unwrap_or_default()));
                eprintln!("this key looks wrong");
                Err("gave up on this key".into())
            }
            other => Err(format!("unknown misbehaviour '{other}'").into()),
        }
    }
}

weir_guest::export_operator!(Misbehave);
