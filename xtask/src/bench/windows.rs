//! The tumbling event-time window count against Flink's in the same rounds: 20,000,000 generated
//! events over 100,000 keys, 1,000 events per millisecond of event time (so each key has about
//! 100 events in each 10 s window), watermarks at the highest timestamp, p=1, output discarded.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::flink::Flink;
use super::{median, run_job, step};
use crate::Artifacts;

/// Events per second, medians over the rounds; Flink's when it is set up.
pub(super) struct WindowRates {
    pub(super) weir: f64,
    pub(super) flink: Option<f64>,
}

/// The Flink window job, compiled once per bench into `dir` against the anchor's FLINK_HOME.
struct FlinkWindows {
    java: Vec<String>,
}

impl FlinkWindows {
    fn compile(flink: &Flink, root: &Path, dir: &Path) -> Result<FlinkWindows> {
        let home = flink.home.join("flink-2.3.0");
        let classes = dir.join("flink-window-classes");
        std::fs::create_dir_all(&classes)?;
        let source = root.join("xtask/flink/FlinkWindowBench.java");
        let status = Command::new("javac")
            .arg("-cp")
            .arg(format!("{}/lib/*", home.display()))
            .arg("-d")
            .arg(&classes)
            .arg(&source)
            .status()
            .context("running javac")?;
        anyhow::ensure!(status.success(), "javac could not compile {}", source.display());
        // The anchor's classpath and Java 17 options (its run.sh does the same).
        let lib = |jar: &str| home.join("lib").join(jar).display().to_string();
        let classpath = [classes.display().to_string(), lib("flink-dist-2.3.0.jar"), lib("log4j-api-2.25.3.jar")]
            .into_iter()
            .chain([lib("log4j-core-2.25.3.jar"), lib("log4j-slf4j-impl-2.25.3.jar"), lib("log4j-1.2-api-2.25.3.jar")])
            .collect::<Vec<_>>()
            .join(":");
        let config = std::fs::read_to_string(home.join("conf/config.yaml"))?;
        let options = config.lines().find_map(|l| l.trim().strip_prefix("all:")).unwrap_or_default();
        let mut java: Vec<String> = options.split_whitespace().map(str::to_string).collect();
        java.push("-Xmx4g".into());
        java.push(format!("-Dlog4j.configurationFile={}", flink.home.join("log4j2-bench.properties").display()));
        java.push(format!("-Dlog.file={}", dir.join("flink-window.log").display()));
        java.extend(["-cp".to_string(), classpath, "FlinkWindowBench".to_string()]);
        Ok(FlinkWindows { java })
    }

    fn rate(&self, events: u64, keys: u64) -> Result<f64> {
        let out = Command::new("java")
            .args(&self.java)
            .args([format!("n={events}"), format!("k={keys}"), "p=1".into(), "sizeMs=10000".into()])
            .arg("stepNanos=1000")
            .output()
            .context("running Flink's window job")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.split_whitespace().find_map(|w| w.strip_prefix("throughput_eps=")?.parse().ok()) {
            Some(rate) => Ok(rate),
            None => bail!("Flink's window job printed no throughput: {stdout}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }
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
    let flink = flink.map(|f| FlinkWindows::compile(f, root, dir)).transpose()?;
    let (mut weir, mut flinks) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: window count, {events} events over {keys} keys, 10 s windows"));
        let run = run_job(&artifacts.weir, &job)?;
        println!("    weir {:.0} events/s", events as f64 / run.seconds);
        weir.push(events as f64 / run.seconds);
        if let Some(flink) = &flink {
            let rate = flink.rate(events, keys)?;
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
