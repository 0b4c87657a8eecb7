//! Apache Flink 2.3, the anchor in `../shared/anchors/flink`, run beside weir in the same bench
//! rounds so that weir's figures are compared as ratios measured in one run (these machines are
//! shared and noisy: absolute figures from another hour mean little). The bench sets the anchor
//! up itself (Flink from PyPI, its job compiled with `javac`) when Java 17 is on the machine.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Workspace, step};

/// Flink's side of the comparison: the anchor's `run.sh`.
pub(super) struct Flink {
    run_sh: PathBuf,
    /// `$FLINKBENCH`: the anchor's FLINK_HOME is `flink-2.3.0` in it.
    pub(super) home: PathBuf,
}

/// One configuration of the anchor's keyed count: parallelism, state backend (`hashmap` or
/// `rocksdb`), and the checkpoint interval in ms (0: off).
#[derive(Clone, Copy)]
pub(super) struct FlinkCount {
    pub(super) parallelism: u32,
    pub(super) backend: &'static str,
    pub(super) checkpoint_ms: u64,
}

impl Flink {
    /// Why Flink was not measured.
    pub(super) const MISSING: &str =
        "no Java 17 here, or ../shared/anchors/flink/setup.sh failed (see the bench's output)";

    /// The anchor, set up first if it is not yet and Java is here; `None` (said on the way) if
    /// it cannot be.
    pub(super) fn find(ws: &Workspace) -> Option<Flink> {
        let anchor = ws.root.join("../shared/anchors/flink");
        let home = std::env::var_os("FLINKBENCH")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flinkbench")))?;
        let flink = Flink { run_sh: anchor.join("run.sh"), home };
        if flink.is_set_up() {
            return Some(flink);
        }
        if !anchor.join("setup.sh").is_file() {
            println!("    Flink is not measured: the anchor ../shared/anchors/flink is not here");
            return None;
        }
        if !Command::new("javac").arg("-version").output().is_ok_and(|o| o.status.success()) {
            println!("    Flink is not measured: no Java 17 (javac) on this machine; weir's figures stand alone");
            return None;
        }
        step("setting up Flink 2.3 for the comparison (once per machine: from PyPI, into $FLINKBENCH)");
        let status = Command::new("bash").arg(anchor.join("setup.sh")).status();
        match status {
            Ok(s) if s.success() && flink.is_set_up() => Some(flink),
            _ => {
                println!("    Flink is not measured: ../shared/anchors/flink/setup.sh failed");
                None
            }
        }
    }

    fn is_set_up(&self) -> bool {
        self.run_sh.is_file() && self.home.join("flink-2.3.0").is_dir() && self.home.join("classes").is_dir()
    }

    /// Events per second of the anchor's keyed count of `events` events over `keys` keys.
    pub(super) fn count_rate(&self, round: usize, events: u64, keys: u64, config: FlinkCount) -> Result<f64> {
        let FlinkCount { parallelism, backend, checkpoint_ms } = config;
        let tag = format!("weir-bench-{backend}-p{parallelism}-ck{checkpoint_ms}-{round}");
        let out = Command::new("bash")
            .arg(&self.run_sh)
            .args(["one", &tag, "mode=run", &format!("n={events}"), &format!("k={keys}")])
            .args([format!("p={parallelism}"), format!("backend={backend}"), format!("ckpt={checkpoint_ms}")])
            .args((backend == "rocksdb" && checkpoint_ms > 0).then_some("incremental=true"))
            .output()
            .context("running Flink's anchor")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rate = stdout.split_whitespace().find_map(|w| w.strip_prefix("throughput_eps=")?.parse().ok());
        match rate {
            Some(rate) => Ok(rate),
            None => bail!("Flink's anchor printed no throughput: {stdout}"),
        }
    }
}

/// A job of `xtask/flink/` (the bench's own Flink jobs, beside the anchor's keyed count), compiled
/// once per bench into the bench's directory against the anchor's FLINK_HOME, and the `java`
/// arguments that run it as the anchor's `run.sh` runs its job.
pub(super) struct FlinkJob {
    java: Vec<String>,
    name: String,
}

impl FlinkJob {
    pub(super) fn compile(flink: &Flink, root: &Path, dir: &Path, class: &str) -> Result<FlinkJob> {
        let home = flink.home.join("flink-2.3.0");
        let classes = dir.join(format!("{class}-classes"));
        std::fs::create_dir_all(&classes)?;
        let source = root.join(format!("xtask/flink/{class}.java"));
        let status = Command::new("javac")
            .arg("-cp")
            .arg(format!("{}/lib/*", home.display()))
            .arg("-d")
            .arg(&classes)
            .arg(&source)
            .status()
            .context("running javac")?;
        anyhow::ensure!(status.success(), "javac could not compile {}", source.display());
        let lib = |jar: &str| home.join("lib").join(jar).display().to_string();
        let jars = ["flink-dist-2.3.0.jar", "flink-connector-files-2.3.0.jar", "log4j-api-2.25.3.jar"]
            .into_iter()
            .chain(["log4j-core-2.25.3.jar", "log4j-slf4j-impl-2.25.3.jar", "log4j-1.2-api-2.25.3.jar"]);
        let classpath =
            std::iter::once(classes.display().to_string()).chain(jars.map(lib)).collect::<Vec<_>>().join(":");
        // The anchor's Java 17 options (its run.sh does the same).
        let config = std::fs::read_to_string(home.join("conf/config.yaml"))?;
        let options = config.lines().find_map(|l| l.trim().strip_prefix("all:")).unwrap_or_default();
        let mut java: Vec<String> = options.split_whitespace().map(str::to_string).collect();
        java.push("-Xmx4g".into());
        java.push(format!("-Dlog4j.configurationFile={}", flink.home.join("log4j2-bench.properties").display()));
        java.push(format!("-Dlog.file={}", dir.join(format!("{class}.log")).display()));
        java.extend(["-cp".to_string(), classpath, class.to_string()]);
        Ok(FlinkJob { java, name: class.to_string() })
    }

    /// Runs it with `args` (`key=value`); the `throughput_eps` it printed.
    pub(super) fn rate(&self, args: &[String]) -> Result<f64> {
        let out = Command::new("java").args(&self.java).args(args).output().context("running java")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.split_whitespace().find_map(|w| w.strip_prefix("throughput_eps=")?.parse().ok()) {
            Some(rate) => Ok(rate),
            None => {
                bail!("Flink's {} printed no throughput: {stdout}{}", self.name, String::from_utf8_lossy(&out.stderr))
            }
        }
    }
}
