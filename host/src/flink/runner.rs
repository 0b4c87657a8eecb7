//! The Flink runner's jar: the Java sources of `flink/runner/` are part of the `weir` binary and
//! compiled on first use with the JDK's `javac` against the Flink distribution's jars, into a
//! cache directory named by their hash (no Maven, nothing to install with weir itself).
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The runner's sources, by their path under `flink/runner/`.
const SOURCES: &[(&str, &str)] = &[
    ("weir/flink/Connectors.java", include_str!("../../../flink/runner/weir/flink/Connectors.java")),
    ("weir/flink/Event.java", include_str!("../../../flink/runner/weir/flink/Event.java")),
    ("weir/flink/EventSerializer.java", include_str!("../../../flink/runner/weir/flink/EventSerializer.java")),
    ("weir/flink/Exchange.java", include_str!("../../../flink/runner/weir/flink/Exchange.java")),
    ("weir/flink/Frames.java", include_str!("../../../flink/runner/weir/flink/Frames.java")),
    ("weir/flink/Migration.java", include_str!("../../../flink/runner/weir/flink/Migration.java")),
    ("weir/flink/OperatorSpec.java", include_str!("../../../flink/runner/weir/flink/OperatorSpec.java")),
    ("weir/flink/Upgrade.java", include_str!("../../../flink/runner/weir/flink/Upgrade.java")),
    ("weir/flink/WasmOperator.java", include_str!("../../../flink/runner/weir/flink/WasmOperator.java")),
    ("weir/flink/WeirFlinkJob.java", include_str!("../../../flink/runner/weir/flink/WeirFlinkJob.java")),
    ("weir/flink/Worker.java", include_str!("../../../flink/runner/weir/flink/Worker.java")),
];

/// The class Flink runs.
pub const ENTRY_CLASS: &str = "weir.flink.WeirFlinkJob";

/// The jar of the runner, built against the Flink at `flink_home` into `cache` if it is not there
/// yet: `weir-flink-runner-<hash>.jar`, the hash telling one build of the sources from another.
pub fn jar(flink_home: &Path, cache: &Path) -> Result<PathBuf, String> {
    let mut hash = Sha256::new();
    for (path, text) in SOURCES {
        hash.update(path.as_bytes());
        hash.update(text.as_bytes());
    }
    let tag = &hex::encode(hash.finalize())[..12];
    let jar = cache.join(format!("weir-flink-runner-{tag}.jar"));
    if jar.is_file() {
        return Ok(jar);
    }
    // Two commands may build it at once: each in a directory of its own, the first to finish wins.
    let work = cache.join(format!("build-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let (src, classes) = (work.join("src"), work.join("classes"));
    for (path, text) in SOURCES {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&src))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    let lib = flink_home.join("lib");
    if !lib.join("flink-dist-2.3.0.jar").is_file() {
        return Err(format!(
            "{} is not a Flink 2.3.0 distribution (no lib/flink-dist-2.3.0.jar); `weir flink cluster start` \
             installs one, or set FLINK_HOME",
            flink_home.display()
        ));
    }
    let mut javac = Command::new("javac");
    javac.arg("-nowarn").arg("-cp").arg(format!("{}/*", lib.display())).arg("-d").arg(&classes);
    javac.args(SOURCES.iter().map(|(path, _)| src.join(path)));
    run(&mut javac, "javac", "compile the Flink runner")?;
    let partial = work.join(format!("weir-flink-runner-{tag}.jar"));
    let mut pack = Command::new("jar");
    pack.arg("--create")
        .arg("--file")
        .arg(&partial)
        .arg("--main-class")
        .arg(ENTRY_CLASS)
        .arg("-C")
        .arg(&classes)
        .arg(".");
    run(&mut pack, "jar", "package the Flink runner")?;
    std::fs::rename(&partial, &jar).map_err(|e| format!("cannot move {} into place: {e}", jar.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(jar)
}

/// Runs a JDK tool; what it printed when it failed.
fn run(command: &mut Command, tool: &str, to: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| {
        format!("cannot run `{tool}` to {to}: {e}; the Flink runner needs a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)")
    })?;
    if !out.status.success() {
        return Err(format!(
            "`{tool}` could not {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_binary_carries_every_source_of_the_runner() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flink/runner/weir/flink");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("weir/flink/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let carried: Vec<String> = super::SOURCES.iter().map(|(path, _)| path.to_string()).collect();
        assert_eq!(carried, on_disk, "SOURCES must list every file of flink/runner/weir/flink, sorted");
    }
}
