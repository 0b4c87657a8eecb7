//! A local Flink cluster for trying the Flink runner and for the tests: Flink 2.3.0 installed
//! from PyPI (the `apache-flink` wheels carry the distribution's jars and scripts, so no Maven
//! and no download site other than PyPI), a JobManager and TaskManagers on loopback, started and
//! stopped with the distribution's own scripts, everything (configuration, logs, checkpoints,
//! savepoints, uploaded jars) in one directory.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::rest::JobManager;

/// The Flink version the runner is built against.
pub const FLINK_VERSION: &str = "2.3.0";

/// Where weir keeps Flink and its cluster: `$WEIR_CACHE_DIR/flink` or `~/.cache/weir/flink`.
pub fn home() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("weir").join("flink")
}

/// The Flink distribution to use: `given`, `$FLINK_HOME`, or the one weir installs, installed
/// first when `install` and it is not there yet.
pub fn flink_home(given: Option<&Path>, install: bool) -> Result<PathBuf, String> {
    if let Some(path) = given.map(Path::to_path_buf).or_else(|| std::env::var_os("FLINK_HOME").map(PathBuf::from)) {
        return Ok(path);
    }
    let dir = home().join(format!("flink-{FLINK_VERSION}"));
    if dir.join("lib").join(format!("flink-dist-{FLINK_VERSION}.jar")).is_file() {
        return Ok(dir);
    }
    if !install {
        return Err(format!(
            "no Flink {FLINK_VERSION} at {}: `weir flink cluster start` installs it, or set FLINK_HOME",
            dir.display()
        ));
    }
    install_from_pypi(&dir)?;
    Ok(dir)
}

/// Downloads the `apache-flink` and `apache-flink-libraries` wheels with pip and assembles a
/// FLINK_HOME from them at `dir` (what Flink's own binary tarball holds: bin, conf, lib, opt,
/// plugins).
fn install_from_pypi(dir: &Path) -> Result<(), String> {
    // Two commands may install at once (tests do): each in a directory of its own.
    let work = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let pkgs = work.join("pkgs");
    eprintln!("installing Flink {FLINK_VERSION} from PyPI into {} (once; about 330 MB)", dir.display());
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .arg(format!("apache-flink=={FLINK_VERSION}"))
        .arg(format!("apache-flink-libraries=={FLINK_VERSION}"))
        .arg("-d")
        .arg(&pkgs)
        .output()
        .map_err(|e| {
            format!("cannot run `python3 -m pip` to download Flink: {e} (Debian: apt-get install python3-pip)")
        })?;
    if !out.status.success() {
        return Err(format!("pip could not download Flink {FLINK_VERSION}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let wheels: Vec<PathBuf> = std::fs::read_dir(&pkgs)
        .map_err(|e| format!("cannot read {}: {e}", pkgs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    let home = work.join("home");
    for wheel in &wheels {
        let unpacked = work.join("unpacked");
        let _ = std::fs::remove_dir_all(&unpacked);
        let status = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(wheel)
            .arg(&unpacked)
            .status()
            .map_err(|e| format!("cannot unpack {}: {e}", wheel.display()))?;
        if !status.success() {
            return Err(format!("cannot unpack {}", wheel.display()));
        }
        for part in ["bin", "conf", "lib", "opt", "plugins"] {
            let from = unpacked.join("pyflink").join(part);
            if from.is_dir() {
                copy_dir(&from, &home.join(part))?;
            }
        }
    }
    for entry in
        std::fs::read_dir(home.join("bin")).map_err(|e| format!("the Flink wheels have no bin/: {e}"))?.flatten()
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
    }
    if !home.join("lib").join(format!("flink-dist-{FLINK_VERSION}.jar")).is_file() {
        return Err(format!("the Flink wheels held no lib/flink-dist-{FLINK_VERSION}.jar"));
    }
    let moved = std::fs::rename(&home, dir);
    let _ = std::fs::remove_dir_all(&work);
    match moved {
        Ok(()) => Ok(()),
        // Another install finished first.
        Err(_) if dir.join("lib").join(format!("flink-dist-{FLINK_VERSION}.jar")).is_file() => Ok(()),
        Err(e) => Err(format!("cannot move Flink into {}: {e}", dir.display())),
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?.flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("cannot copy to {}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// A local cluster's directory and settings.
pub struct LocalCluster {
    /// Its configuration, logs, checkpoints, savepoints and uploaded jars.
    pub dir: PathBuf,
    /// The Flink distribution it runs.
    pub flink_home: PathBuf,
}

impl LocalCluster {
    fn script(&self, name: &str) -> Command {
        let mut command = Command::new(self.flink_home.join("bin").join(name));
        command
            .env("FLINK_HOME", &self.flink_home)
            .env("FLINK_CONF_DIR", self.dir.join("conf"))
            .env("FLINK_LOG_DIR", self.dir.join("log"));
        command
    }

    /// The REST URL its configuration names.
    pub fn url(&self) -> Result<String, String> {
        let config = std::fs::read_to_string(self.dir.join("conf/config.yaml"))
            .map_err(|_| format!("no Flink cluster was started in {}", self.dir.display()))?;
        let port = config.lines().find_map(|l| l.strip_prefix("rest.port: ")).unwrap_or("8081");
        Ok(format!("http://127.0.0.1:{}", port.trim()))
    }

    /// Writes its configuration and starts a JobManager answering on `port` and `taskmanagers`
    /// TaskManagers of `slots` slots; returns once they have all registered.
    pub fn start(&self, port: u16, taskmanagers: u32, slots: u32) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{port}");
        if JobManager::new(&url).version().is_ok() {
            return Err(format!(
                "something already answers at {url}: a cluster is running (`weir flink cluster stop`), or choose another --port"
            ));
        }
        let conf = self.dir.join("conf");
        copy_dir(&self.flink_home.join("conf"), &conf)?;
        let shipped = std::fs::read_to_string(self.flink_home.join("conf/config.yaml")).unwrap_or_default();
        // The JVM options Flink's own configuration sets for Java 17.
        let java_options = shipped.lines().find_map(|l| l.trim().strip_prefix("all:")).unwrap_or_default().trim();
        let rpc_port = free_port()?;
        let dir = self.dir.display();
        let config = format!(
            "# Written by `weir flink cluster start`: a cluster on loopback only.\n\
             env.java.opts.all: {java_options}\n\
             env.pid.dir: {dir}/pid\n\
             jobmanager.rpc.address: 127.0.0.1\n\
             jobmanager.rpc.port: {rpc_port}\n\
             jobmanager.bind-host: 127.0.0.1\n\
             jobmanager.memory.process.size: 1024m\n\
             jobmanager.execution.failover-strategy: region\n\
             taskmanager.bind-host: 127.0.0.1\n\
             taskmanager.host: 127.0.0.1\n\
             taskmanager.numberOfTaskSlots: {slots}\n\
             taskmanager.memory.process.size: 1536m\n\
             rest.address: 127.0.0.1\n\
             rest.bind-address: 127.0.0.1\n\
             rest.port: {port}\n\
             web.upload.dir: {dir}/uploads\n\
             parallelism.default: 1\n\
             execution.checkpointing.dir: file://{dir}/checkpoints\n\
             execution.checkpointing.savepoint-dir: file://{dir}/savepoints\n\
             execution.checkpointing.num-retained: 2\n\
             restart-strategy.type: fixed-delay\n\
             restart-strategy.fixed-delay.attempts: 20\n\
             restart-strategy.fixed-delay.delay: 1 s\n\
             heartbeat.timeout: 10000\n\
             heartbeat.interval: 2000\n"
        );
        std::fs::write(conf.join("config.yaml"), config).map_err(|e| format!("cannot write the configuration: {e}"))?;
        for sub in ["log", "pid", "uploads"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(|e| format!("cannot create {dir}/{sub}: {e}"))?;
        }
        run(self.script("jobmanager.sh").arg("start"), "start the JobManager")?;
        for _ in 0..taskmanagers {
            self.add_taskmanager()?;
        }
        let jobmanager = JobManager::new(&url);
        let started = Instant::now();
        loop {
            match jobmanager.overview() {
                Ok(o) if o["taskmanagers"].as_u64().unwrap_or(0) >= u64::from(taskmanagers) => return Ok(url),
                _ if started.elapsed() > Duration::from_secs(180) => {
                    return Err(format!(
                        "the local Flink cluster did not come up within 3 minutes; its logs are in {dir}/log"
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Starts one more TaskManager (after one was lost, say).
    pub fn add_taskmanager(&self) -> Result<(), String> {
        run(self.script("taskmanager.sh").arg("start"), "start a TaskManager")
    }

    /// Stops its TaskManagers and its JobManager.
    pub fn stop(&self) -> Result<(), String> {
        run(self.script("taskmanager.sh").arg("stop-all"), "stop the TaskManagers")?;
        run(self.script("jobmanager.sh").arg("stop-all"), "stop the JobManager")
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn run(command: &mut Command, to: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("cannot {to}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
