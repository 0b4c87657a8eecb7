//! The keyed count's throughput (issue 2's job: generated events over keys, counted per key,
//! into a blackhole sink) in weir's configurations and in Flink's, interleaved round by round so
//! that both see the same machine; medians per configuration, and the ratios weir / Flink.
use std::path::Path;

use anyhow::Result;

use super::flink::{Flink, FlinkCount};
use super::{CountJob, keyed_count_job, median, run_job, verdict};
use crate::{Artifacts, step};

/// Medians over the rounds, in events per second.
pub(super) struct Throughput {
    pub(super) wasm1: f64,
    pub(super) native1: f64,
    pub(super) wasm2: f64,
    /// Wasm count at p=1 with exactly-once checkpoints every second.
    pub(super) checkpointed1: f64,
    pub(super) rocksdb1: f64,
    /// The same configurations in Flink, when it ran.
    pub(super) flink: Option<FlinkThroughput>,
}

/// Flink 2.3's keyed count (heap state unless said otherwise), medians over the same rounds.
pub(super) struct FlinkThroughput {
    pub(super) p1: f64,
    pub(super) p2: f64,
    pub(super) checkpointed1: f64,
    pub(super) rocksdb1: f64,
}

/// Which of Flink's figures a row of weir's compares with.
type Pick = fn(&FlinkThroughput) -> f64;

/// Flink's configurations, in the order of [`FlinkThroughput`]'s fields.
const FLINK: [(&str, FlinkCount); 4] = [
    ("heap state, p=1", FlinkCount { parallelism: 1, backend: "hashmap", checkpoint_ms: 0 }),
    ("heap state, p=2", FlinkCount { parallelism: 2, backend: "hashmap", checkpoint_ms: 0 }),
    ("heap state, p=1, checkpoints every 1 s", FlinkCount { parallelism: 1, backend: "hashmap", checkpoint_ms: 1000 }),
    ("RocksDB, p=1", FlinkCount { parallelism: 1, backend: "rocksdb", checkpoint_ms: 0 }),
];

/// Runs every configuration once per round, weir's then Flink's.
pub(super) fn rates(
    artifacts: &Artifacts,
    dir: &Path,
    flink: Option<&Flink>,
    (n, k): (u64, u64),
    rounds: usize,
) -> Result<Throughput> {
    let count = format!("module = \"{}\"", artifacts.operators.join("count.wasm").display());
    let native = "builtin = \"keyed-count\"".to_string();
    let checkpointing = "[checkpointing]\ninterval = \"1s\"\nstorage = \"file://checkpoints\"";
    let count1 = |name, extra| CountJob { name, operator: &count, parallelism: 1, events: Some(n), keys: k, extra };
    let configs = [
        ("Wasm count, p=1", keyed_count_job(dir, "wasm-p1", &count, 1, n, k)?),
        ("native count, p=1", keyed_count_job(dir, "native-p1", &native, 1, n, k)?),
        ("Wasm count, p=2", keyed_count_job(dir, "wasm-p2", &count, 2, n, k)?),
        (
            "Wasm count, p=1, exactly-once checkpoints every 1 s",
            count1("wasm-p1-checkpoints", checkpointing).write(dir, "wasm-p1-checkpoints")?,
        ),
        (
            "Wasm count, p=1, RocksDB state backend",
            count1("wasm-p1-rocksdb", "[state]\nbackend = \"rocksdb\"\nlocal-dir = \"rocksdb\"")
                .write(dir, "wasm-p1-rocksdb")?,
        ),
    ];
    let mut weir: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut flinks: Vec<Vec<f64>> = vec![Vec::new(); FLINK.len()];
    for round in 1..=rounds.max(1) {
        for (i, (name, job)) in configs.iter().enumerate() {
            step(&format!("round {round}/{rounds}: weir, {name}, {n} events over {k} keys"));
            let run = run_job(&artifacts.weir, job)?;
            println!("    {:.0} events/s ({} events in {:.2} s)", run.rate(), run.events, run.seconds);
            weir[i].push(run.rate());
        }
        for (i, (name, config)) in FLINK.iter().enumerate().filter(|_| flink.is_some()) {
            step(&format!("round {round}/{rounds}: Flink 2.3, {name}, {n} events over {k} keys"));
            let rate = flink.map(|f| f.count_rate(round, n, k, *config)).transpose()?.unwrap_or_default();
            println!("    {rate:.0} events/s");
            flinks[i].push(rate);
        }
    }
    let [wasm1, native1, wasm2, checkpointed1, rocksdb1] = [0, 1, 2, 3, 4].map(|i| median(&mut weir[i]));
    let flink = flink.map(|_| {
        let [p1, p2, checkpointed1, rocksdb1] = [0, 1, 2, 3].map(|i| median(&mut flinks[i]));
        FlinkThroughput { p1, p2, checkpointed1, rocksdb1 }
    });
    Ok(Throughput { wasm1, native1, wasm2, checkpointed1, rocksdb1, flink })
}

impl Throughput {
    /// The medians, weir's and Flink's side by side.
    pub(super) fn print_results(&self) {
        let rows: [(&str, f64, Pick); 5] = [
            ("Wasm count, p=1", self.wasm1, |f| f.p1),
            ("native count, p=1", self.native1, |f| f.p1),
            ("Wasm count, p=2", self.wasm2, |f| f.p2),
            ("Wasm count, p=1, checkpoints every 1 s", self.checkpointed1, |f| f.checkpointed1),
            ("Wasm count, p=1, RocksDB", self.rocksdb1, |f| f.rocksdb1),
        ];
        println!("  {:<42} {:>12}  {:>12}  {:>7}", "events/s", "weir", "Flink 2.3", "weir/Flink");
        for (name, weir, pick) in rows {
            match &self.flink {
                Some(f) => println!("  {name:<42} {weir:>12.0}  {:>12.0}  {:>7.2}", pick(f), weir / pick(f)),
                None => println!("  {name:<42} {weir:>12.0}  {:>12}", "not measured"),
            }
        }
        if let Some(f) = &self.flink {
            println!("  Flink's own loss with checkpoints every 1 s: {:.1}%", (1.0 - f.checkpointed1 / f.p1) * 100.0);
        }
    }

    /// The throughput targets (issues 2 and 18) and whether each is met.
    pub(super) fn print_targets(&self) {
        let (ratio, scale, loss) =
            (self.wasm1 / self.native1, self.wasm2 / self.wasm1, 1.0 - self.checkpointed1 / self.wasm1);
        println!("  Wasm p=1 >= 3,000,000 events/s:        {:>12.0}  {}", self.wasm1, verdict(self.wasm1 >= 3e6));
        println!("  Wasm / native >= 0.5:                  {ratio:>12.2}  {}", verdict(ratio >= 0.5));
        println!("  p=2 / p=1 >= 1.8:                      {scale:>12.2}  {}", verdict(scale >= 1.8));
        println!("  checkpoints every 1 s cost <= 3%:      {:>11.1}%  {}", loss * 100.0, verdict(loss <= 0.03));
        let Some(f) = &self.flink else {
            println!("  the ratios to Flink: not measured ({})", Flink::MISSING);
            return;
        };
        let against = [
            ("Wasm p=1 / Flink p=1 >= 2 (goal 3)", self.wasm1 / f.p1, 2.0),
            ("native p=1 / Flink p=1 >= 3", self.native1 / f.p1, 3.0),
            ("RocksDB p=1 / Flink RocksDB p=1 >= 3", self.rocksdb1 / f.rocksdb1, 3.0),
        ];
        for (what, figure, at_least) in against {
            println!("  {what:<38} {figure:>12.2}  {}", verdict(figure >= at_least));
        }
    }
}
