//! The SDK against the frame test vectors every SDK shares (`docs/frame-vectors.json`): the
//! operators it names, written with this SDK, must turn each input frame into its output frame.
use crate::bindings::weir::operator::types;
use crate::runtime::Runtime;
use crate::{Context, Description, Event, OpenContext, Operator, Result, Timer, ValueState};

struct Count {
    count: ValueState<u64>,
}

#[derive(serde::Serialize)]
struct Counted<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for Count {
    fn describe() -> Description {
        Description::new("count", "1.0.0").value_state("count", 1)
    }
    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(Count { count: ctx.value_state("count")? })
    }
    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        let key = String::from_utf8_lossy(event.key.unwrap_or_default());
        ctx.emit_json(&Counted { key: &key, count })
    }
}

struct TimerEcho {
    open: ValueState<bool>,
}

impl Operator for TimerEcho {
    fn describe() -> Description {
        Description::new("timer-echo", "1.0.0").value_state("open", 1).time_to_live(60_000)
    }
    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(TimerEcho { open: ctx.value_state("open")? })
    }
    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.open.set(ctx, &true)?;
        ctx.register_event_time_timer(event.timestamp.unwrap_or_default() + 10)?;
        ctx.delete_processing_time_timer(-5)
    }
    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<()> {
        self.open.clear(ctx)?;
        let watermark = ctx.current_watermark().map_or("null".to_string(), |w| w.to_string());
        let text = format!("fired {} at {} wm {watermark}", String::from_utf8_lossy(timer.key), timer.time);
        ctx.emit(text.as_bytes());
        Ok(())
    }
}

struct Split;

impl Operator for Split {
    fn describe() -> Description {
        Description::new("split", "1.0.0").input("main").input("other").side_output("other")
    }
    fn open(_ctx: &OpenContext) -> Result<Self> {
        Ok(Split)
    }
    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        match ctx.input() {
            "other" => ctx.emit_to("other", event.value),
            _ => {
                ctx.emit(event.value);
                Ok(())
            }
        }
    }
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn run<O: Operator>(call: &str, input: &[u8]) -> Vec<u8> {
    let context =
        types::Context { uid: "t".into(), subtask_index: 0, parallelism: 1, max_parallelism: 128, attempt: 0 };
    let mut runtime = Runtime::<O>::open("{}".into(), context).expect("open");
    match call {
        "on-timers" => runtime.on_timers(input),
        _ => runtime.process_batch(input),
    }
    .expect("the call succeeds")
}

#[test]
fn the_frame_test_vectors() {
    let text = include_str!("../../docs/frame-vectors.json");
    let vectors: serde_json::Value = serde_json::from_str(text).expect("JSON");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let (name, call) = (case["name"].as_str().unwrap(), case["call"].as_str().unwrap());
        let input = unhex(case["input"].as_str().unwrap());
        let output = match case["operator"].as_str().unwrap() {
            "count" => run::<Count>(call, &input),
            "timer-echo" => run::<TimerEcho>(call, &input),
            "split" => run::<Split>(call, &input),
            other => panic!("{name}: unknown operator {other}"),
        };
        assert_eq!(output, unhex(case["output"].as_str().unwrap()), "{name}");
    }
}
