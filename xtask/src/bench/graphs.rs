//! Jobs as graphs (issue 29): the `enrich` example's event-time temporal join against the same
//! join in Flink 2.3 (`KeyedCoProcessFunction`, heap state; `xtask/flink/FlinkJoinBench.java`)
//! over the same files in the same rounds, and the checkpoint of an operator reading two inputs
//! (aligned over both) against one reading a single input, with the same state.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::flink::{Flink, FlinkJob};
use super::{median, run_job, step};
use crate::Artifacts;

/// Clicks and users of the join's files: 20 clicks per user.
const CLICKS: u64 = 4_000_000;
const USERS: u64 = 200_000;

/// What the graph part of the bench measured (medians).
pub(super) struct GraphFigures {
    /// Clicks per second through the join.
    pub(super) weir_join: f64,
    pub(super) flink_join: Option<f64>,
    /// The checkpoints of a count reading one input and of one reading two, taken while events
    /// flow.
    pub(super) one_input: CheckpointTimes,
    pub(super) two_inputs: CheckpointTimes,
}

/// Medians over a run's checkpoints, in ms.
#[derive(Clone, Copy, Default)]
pub(super) struct CheckpointTimes {
    /// The count's synchronous part.
    sync: f64,
    /// Trigger to completion.
    whole: f64,
    /// From the first barrier at the count to the last (its alignment).
    alignment: f64,
}

/// Writes the join's inputs to `dir` once: clicks `{"ts":i,"user":"u…","page":"/p…"}` 1 ms
/// apart, and each user's profile versions (`{"ts":…,"user":…,"plan":…}`: most from the
/// start, every third user only from halfway, every second with a newer one from halfway), so
/// that some clicks are enriched with an older version, some with a newer, some not at all.
fn join_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (clicks, profiles) = (dir.join("join-clicks.jsonl"), dir.join("join-profiles.jsonl"));
    if clicks.is_file() && profiles.is_file() {
        return Ok((clicks, profiles));
    }
    let mut text = String::with_capacity(CLICKS as usize * 48);
    for i in 0..CLICKS {
        let _ = writeln!(text, "{{\"ts\":{i},\"user\":\"u{}\",\"page\":\"/p{}\"}}", (i * 31) % USERS, i % 7);
    }
    std::fs::write(&clicks, text)?;
    let half = CLICKS / 2;
    let mut versions: Vec<(u64, u64, &str)> = Vec::new();
    for k in 0..USERS {
        versions.push(if k % 3 == 0 { (half, k, "late") } else { (k, k, "free") });
        if k % 2 == 0 {
            versions.push((half + k, k, "pro"));
        }
    }
    versions.sort();
    let mut text = String::new();
    for (ts, k, plan) in versions {
        let _ = writeln!(text, "{{\"ts\":{ts},\"user\":\"u{k}\",\"plan\":\"{plan}\"}}");
    }
    std::fs::write(&profiles, text)?;
    Ok((clicks, profiles))
}

/// `examples/enrich/job.toml` over the bench's files at parallelism 1, into blackhole sinks.
fn join_job(dir: &Path, operators: &Path, (clicks, profiles): (&Path, &Path)) -> Result<PathBuf> {
    let timed = "timestamp-field = \"ts\"\nwatermarks = { out-of-orderness = \"0s\" }";
    let module = |name: &str| format!("{:?}", operators.join(format!("{name}.wasm")).display().to_string());
    let key_by = |uid: &str, from: &str| {
        format!(
            "[[operator]]\nuid = \"{uid}\"\nmodule = {}\nconfig = {{ field = \"user\" }}\ninputs = [{{ from = \"{from}\" }}]\n",
            module("key_by")
        )
    };
    let text = format!(
        "name = \"enrich-bench\"\nparallelism = 1\n\n\
         [[source]]\nuid = \"clicks\"\ntype = \"file\"\npath = {:?}\n{timed}\n\n\
         [[source]]\nuid = \"profiles\"\ntype = \"file\"\npath = {:?}\n{timed}\n\n{}\n{}\n\
         [[operator]]\nuid = \"enrich\"\nmodule = {}\ninputs = [\n  {{ from = \"clicks-by-user\", partitioning = \
         \"hash\" }},\n  {{ from = \"profiles-by-user\", partitioning = \"hash\" }},\n]\n\n\
         [[sink]]\nuid = \"enriched\"\ntype = \"blackhole\"\ninputs = [{{ from = \"enrich\" }}]\n\n\
         [[sink]]\nuid = \"unmatched\"\ntype = \"blackhole\"\ninputs = [{{ from = \"enrich.unmatched\" }}]\n",
        clicks.display().to_string(),
        profiles.display().to_string(),
        key_by("clicks-by-user", "clicks"),
        key_by("profiles-by-user", "profiles"),
        module("enrich"),
    );
    let path = dir.join("enrich-bench.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Checkpoints taken of a run, medians over this many after the first.
const CHECKPOINTS: usize = 8;

/// The checkpoints of a keyed count (the Wasm `count`) of unbounded generated events over `keys`
/// keys, taken every 300 ms while the events flow (read from the statistics of the job's API).
/// Its input is two source subtasks either way, so that both jobs run as many threads on the
/// machine's cores: one generator at parallelism 2 (one input), or two generators at
/// parallelism 1 with the same keys (`sources` = 2: two inputs), read by hash.
fn checkpoints_while_flowing(artifacts: &Artifacts, dir: &Path, keys: u64, sources: u64) -> Result<CheckpointTimes> {
    let mut text = format!("name = \"inputs-{sources}\"\nparallelism = 1\n\n");
    for s in 0..sources {
        let parallelism = 2 / sources;
        let _ = write!(
            text,
            "[[source]]\nuid = \"events-{s}\"\ntype = \"generator\"\nkeys = {keys}\nparallelism = {parallelism}\n\n"
        );
    }
    let inputs: Vec<String> =
        (0..sources).map(|s| format!("{{ from = \"events-{s}\", partitioning = \"hash\" }}")).collect();
    let _ = write!(
        text,
        "[[operator]]\nuid = \"count\"\nmodule = {:?}\ninputs = [{}]\n\n\
         [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\n\n\
         [checkpointing]\ninterval = \"300ms\"\nstorage = \"file://chk-{sources}\"\n",
        artifacts.operators.join("count.wasm").display().to_string(),
        inputs.join(", ")
    );
    let job = dir.join(format!("inputs-{sources}.toml"));
    std::fs::write(&job, text)?;
    let _ = std::fs::remove_dir_all(dir.join(format!("chk-{sources}")));
    let (mut child, server, id) = super::run_serving(&artifacts.weir, &job)?;
    let result = (|| {
        let started = std::time::Instant::now();
        loop {
            let stats: serde_json::Value =
                serde_json::from_str(&super::weir_cli(&artifacts.weir, &server, &["--json", "checkpoints", &id])?)?;
            let completed: Vec<&serde_json::Value> =
                stats["history"].as_array().into_iter().flatten().filter(|c| c["status"] == "completed").collect();
            if completed.len() > CHECKPOINTS {
                let of = |field: &str| {
                    let mut values: Vec<f64> =
                        completed[1..].iter().filter_map(|c| c["tasks"]["count"][field].as_f64()).collect();
                    median(&mut values)
                };
                let (sync, alignment) = (of("sync-duration-ms"), of("alignment-duration-ms"));
                let mut whole: Vec<f64> =
                    completed[1..].iter().filter_map(|c| c["end-to-end-duration-ms"].as_f64()).collect();
                return Ok(CheckpointTimes { sync, whole: median(&mut whole), alignment });
            }
            anyhow::ensure!(started.elapsed().as_secs() < 60, "{CHECKPOINTS} checkpoints did not complete in 60 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })();
    let _ = super::weir_cli(&artifacts.weir, &server, &["cancel", &id]);
    let _ = child.wait();
    result
}

pub(super) fn figures(
    artifacts: &Artifacts,
    root: &Path,
    dir: &Path,
    flink: Option<&Flink>,
    keys: u64,
    rounds: usize,
) -> Result<GraphFigures> {
    let files = join_files(dir)?;
    let job = join_job(dir, &artifacts.operators, (&files.0, &files.1))?;
    let flink = flink.map(|f| FlinkJob::compile(f, root, dir, "FlinkJoinBench")).transpose()?;
    let flink_args =
        [format!("clicks={}", files.0.display()), format!("profiles={}", files.1.display()), "p=1".to_string()];
    let (mut weir, mut flinks, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: temporal join of {CLICKS} clicks over {USERS} users"));
        let run = run_job(&artifacts.weir, &job)?;
        println!("    weir {:.0} clicks/s", CLICKS as f64 / run.seconds);
        weir.push(CLICKS as f64 / run.seconds);
        if let Some(flink) = &flink {
            let rate = flink.rate(&flink_args)?;
            println!("    Flink 2.3 {rate:.0} clicks/s");
            flinks.push(rate);
        }
        for (sources, figures) in [(1, &mut one), (2, &mut two)] {
            let times = checkpoints_while_flowing(artifacts, dir, keys, sources)?;
            println!(
                "    count reading {sources} input(s), {keys} keys: checkpoint sync {:.1} ms, whole {:.1} ms, alignment {:.1} ms",
                times.sync, times.whole, times.alignment
            );
            figures.push(times);
        }
    }
    let medians = |figures: &mut Vec<CheckpointTimes>| {
        let of = |f: fn(&CheckpointTimes) -> f64| median(&mut figures.iter().map(f).collect::<Vec<_>>());
        CheckpointTimes { sync: of(|t| t.sync), whole: of(|t| t.whole), alignment: of(|t| t.alignment) }
    };
    Ok(GraphFigures {
        weir_join: median(&mut weir),
        flink_join: (!flinks.is_empty()).then(|| median(&mut flinks)),
        one_input: medians(&mut one),
        two_inputs: medians(&mut two),
    })
}

/// Prints the graph targets of issue 29.
pub(super) fn print_targets(f: &GraphFigures) {
    match f.flink_join {
        Some(flink) => println!(
            "  enrich (temporal join), p=1 / Flink 2.3's KeyedCoProcessFunction (heap) >= 1.5x: {:.2}x ({:.0} vs {:.0} \
             clicks/s)  {}",
            f.weir_join / flink,
            f.weir_join,
            flink,
            super::verdict(f.weir_join >= 1.5 * flink)
        ),
        None => println!("  enrich: {:.0} clicks/s; Flink 2.3 not measured ({})", f.weir_join, Flink::MISSING),
    }
    let (one, two) = (f.one_input, f.two_inputs);
    let within = |two: f64, one: f64| two <= 1.2 * one;
    println!(
        "  checkpoints aligned over two inputs / one input, same state, while events flow: sync {:.1} / {:.1} ms, \
         whole {:.1} / {:.1} ms (alignment {:.1} / {:.1} ms), within 20%  {}",
        two.sync,
        one.sync,
        two.whole,
        one.whole,
        two.alignment,
        one.alignment,
        super::verdict(within(two.sync, one.sync) && within(two.whole, one.whole))
    );
}
