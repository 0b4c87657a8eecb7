//! The tumbling event-time window count against Flink's in the same rounds: 20,000,000 generated
//! events over 100,000 keys, 1,000 events per millisecond of event time (so each key has about
//! 100 events in each 10 s window), watermarks at the highest timestamp, p=1, output discarded.
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::flink::{Flink, FlinkJob};
use super::{median, run_job, step};
use crate::Artifacts;

/// Events per second, medians over the rounds; Flink's when it is set up.
pub(super) struct WindowRates {
    pub(super) weir: f64,
    pub(super) flink: Option<f64>,
}

/// A window count job at parallelism 1, written to `dir/<name>.toml`: `events` generated events
/// (unbounded: `None`) over `keys` keys, 1 µs of event time apart, watermarks at the highest
/// timestamp, counted by `module` in windows of `size`, output discarded; `extra` after it.
pub(super) fn weir_job(
    dir: &Path,
    name: &str,
    module: &Path,
    (events, keys): (Option<u64>, u64),
    size: &str,
    extra: &str,
) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let count = events.map_or(String::new(), |n| format!("count = {n}\n"));
    let text = format!(
        "name = \"{name}\"\nparallelism = 1\n\n\
         [[source]]\nuid = \"events\"\ntype = \"generator\"\n{count}keys = {keys}\n\
         event-time-step = \"1us\"\nwatermarks = {{ out-of-orderness = \"0s\" }}\n\n\
         [[operator]]\nuid = \"windows\"\nmodule = {:?}\ninput = \"hash\"\nconfig = {{ size = \"{size}\" }}\n\n\
         [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\n\n{extra}\n",
        module.display().to_string()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(super) fn rates(
    artifacts: &Artifacts,
    root: &Path,
    dir: &Path,
    flink: Option<&Flink>,
    events: u64,
    keys: u64,
    rounds: usize,
) -> Result<WindowRates> {
    let module = artifacts.operators.join("window_count.wasm");
    let job = weir_job(dir, "windows-p1", &module, (Some(events), keys), "10s", "")?;
    let flink = flink.map(|f| FlinkJob::compile(f, root, dir, "FlinkWindowBench")).transpose()?;
    let (mut weir, mut flinks) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: window count, {events} events over {keys} keys, 10 s windows"));
        let run = run_job(&artifacts.weir, &job)?;
        println!("    weir {:.0} events/s", events as f64 / run.seconds);
        weir.push(events as f64 / run.seconds);
        if let Some(flink) = &flink {
            let args = [format!("n={events}"), format!("k={keys}"), "p=1".into(), "sizeMs=10000".into()];
            let rate = flink.rate(&[&args[..], &["stepNanos=1000".into()]].concat())?;
            println!("    Flink 2.3 {rate:.0} events/s");
            flinks.push(rate);
        }
    }
    Ok(WindowRates { weir: median(&mut weir), flink: (!flinks.is_empty()).then(|| median(&mut flinks)) })
}

/// Prints the window targets of issue 15.
pub(super) fn print_targets(rates: &WindowRates) {
    println!("  window count, p=1 >= 3,000,000 events/s: {:>12.0}  {}", rates.weir, super::verdict(rates.weir >= 3e6));
    match rates.flink {
        Some(flink) => println!(
            "  window count / Flink 2.3's event-time tumbling window (heap), p=1 >= 2x: {:.2}x ({:.0} events/s)  {}",
            rates.weir / flink,
            flink,
            super::verdict(rates.weir >= 2.0 * flink)
        ),
        None => println!("  window count / Flink 2.3: not measured ({})", Flink::MISSING),
    }
}
