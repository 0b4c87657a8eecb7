//! `weir flink …`: the same job files and modules on an Apache Flink cluster, in Flink's verbs.
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use crate::checkpoint::savepoint::SavepointLocation;
use crate::flink::{self, JobManager, LocalCluster};
use crate::wasm::WasmEngine;

#[derive(Args)]
pub(super) struct FlinkArgs {
    /// The JobManager's REST endpoint.
    #[arg(long, global = true, env = "WEIR_FLINK_JOBMANAGER", default_value = "http://127.0.0.1:8081")]
    jobmanager: String,
    /// Where the runner's subtasks write what a savepoint holds, for `weir flink savepoint` and
    /// `stop` to leave a weir savepoint beside Flink's (every TaskManager must reach it: one
    /// machine, or a shared file system). Default: ~/.cache/weir/flink/exports.
    #[arg(long, global = true, env = "WEIR_FLINK_EXPORTS", value_name = "DIR")]
    export_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: FlinkCommand,
}

#[derive(Subcommand)]
enum FlinkCommand {
    /// Submit a job file to the Flink cluster; prints the Flink job id.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Parallelism of its vertices (default: the job file's).
        #[arg(long)]
        parallelism: Option<u32>,
        /// Start from this savepoint: a Flink savepoint, or a weir savepoint (of `weir run`,
        /// `weir serve`, or the `weir/` one `weir flink stop` leaves).
        #[arg(long, value_name = "PATH")]
        from_savepoint: Option<String>,
        /// Start even if some of the savepoint's state has no operator to go to.
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
        /// The Flink distribution the runner is compiled against (default: $FLINK_HOME, or the
        /// one `weir flink cluster start` installs).
        #[arg(long, value_name = "DIR")]
        flink_home: Option<PathBuf>,
        /// The `weir` binary the TaskManagers run as workers (default: this one, which must then
        /// be at the same path on every TaskManager's machine).
        #[arg(long, value_name = "PATH", env = "WEIR_FLINK_WORKER")]
        worker: Option<PathBuf>,
    },
    /// List the cluster's jobs.
    List,
    /// Take a savepoint of a running job; prints where it is, then where the weir savepoint of
    /// the same state is.
    Savepoint {
        /// The Flink job id.
        job_id: String,
        /// Where it goes (default: the cluster's savepoint directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
    },
    /// Stop a job with a savepoint; prints where it is, then where the weir savepoint of the same
    /// state is (`weir run --from-savepoint` goes on from it).
    Stop {
        /// The Flink job id.
        job_id: String,
        /// Take a savepoint (always: stopping is stop-with-savepoint, as in Flink).
        #[arg(long)]
        savepoint: bool,
        /// Where it goes (default: the cluster's savepoint directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
    },
    /// Swap operators' modules under a running job without restarting it: the new modules are
    /// checked against the state first, then every subtask switches at the same checkpoint.
    /// Prints the checkpoint and the pause; a module that fails after the switch is rolled back.
    Upgrade {
        /// The Flink job id.
        job_id: String,
        /// `UID=MODULE`: the operator and its new module (repeatable).
        #[arg(long = "operator", value_name = "UID=MODULE", required = true)]
        operators: Vec<String>,
    },
    /// Cancel a job without a savepoint.
    Cancel {
        /// The Flink job id.
        job_id: String,
    },
    /// A Flink cluster on this machine, on loopback, for trying the Flink runner and for tests.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Install Flink from PyPI (if it is not yet) and print its directory (a FLINK_HOME).
    Install {
        /// The Flink distribution (default: $FLINK_HOME, or installed from PyPI).
        #[arg(long, value_name = "DIR")]
        flink_home: Option<PathBuf>,
    },
    /// Install Flink from PyPI if needed, then start a JobManager and TaskManagers.
    Start {
        #[command(flatten)]
        place: ClusterPlace,
        /// The JobManager's REST port.
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// How many TaskManagers.
        #[arg(long, default_value_t = 2)]
        taskmanagers: u32,
        /// Task slots per TaskManager.
        #[arg(long, default_value_t = 2)]
        slots: u32,
    },
    /// Start one more TaskManager (after one was lost).
    AddTaskmanager {
        #[command(flatten)]
        place: ClusterPlace,
    },
    /// Stop the cluster's TaskManagers and JobManager.
    Stop {
        #[command(flatten)]
        place: ClusterPlace,
    },
}

#[derive(Args)]
struct ClusterPlace {
    /// The cluster's directory: configuration, logs, checkpoints, savepoints.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The Flink distribution (default: $FLINK_HOME, or installed from PyPI).
    #[arg(long, value_name = "DIR")]
    flink_home: Option<PathBuf>,
}

impl ClusterPlace {
    fn cluster(&self) -> Result<LocalCluster> {
        let dir = self.dir.clone().unwrap_or_else(|| flink::cluster::home().join("cluster"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let flink_home = flink::flink_home(self.flink_home.as_deref(), true).map_err(anyhow::Error::msg)?;
        Ok(LocalCluster { dir, flink_home })
    }
}

pub(super) fn flink(args: &FlinkArgs) -> Result<()> {
    let jobmanager = JobManager::new(&args.jobmanager);
    let msg = anyhow::Error::msg;
    let exports = args.export_dir.clone().unwrap_or_else(|| flink::cluster::home().join("exports"));
    std::fs::create_dir_all(&exports).with_context(|| format!("creating {}", exports.display()))?;
    let exports = exports.canonicalize()?;
    match &args.command {
        FlinkCommand::Run { job, parallelism, from_savepoint, allow_non_restored_state, flink_home, worker } => {
            let engine = WasmEngine::new(super::module_cache_dir()).map_err(msg)?;
            let weir = match worker {
                Some(worker) => worker.clone(),
                None => std::env::current_exe().context("finding the weir binary (the workers run it)")?,
            };
            let mut plan = flink::plan::plan(job, *parallelism, &engine, &weir, &exports).map_err(msg)?;
            jobmanager.version().map_err(msg)?;
            // A weir savepoint is loaded by the runner's subtasks on a fresh start; a Flink one is Flink's.
            let weir_savepoint = from_savepoint.as_deref().filter(|p| {
                SavepointLocation::parse(p, std::path::Path::new(".")).is_ok_and(|at| at.metadata().is_ok())
            });
            if let Some(savepoint) = weir_savepoint {
                let dir = flink::cluster::home().join("bootstrap").join(format!(
                    "{}-{}",
                    plan["name"].as_str().unwrap_or("job"),
                    crate::runtime::now_ms()
                ));
                flink::savepoints::bootstrap(savepoint, &mut plan, &engine, &dir, *allow_non_restored_state)
                    .map_err(msg)?;
            }
            let flink_savepoint = from_savepoint.as_deref().filter(|_| weir_savepoint.is_none());
            let flink_home = flink::flink_home(flink_home.as_deref(), true).map_err(msg)?;
            let jar = flink::runner::jar(&flink_home, &flink::cluster::home().join("runner")).map_err(msg)?;
            let jar_id = jobmanager.upload(&jar).map_err(msg)?;
            let id = jobmanager.run_plan(&jar_id, &plan, flink_savepoint, *allow_non_restored_state).map_err(msg)?;
            // What `savepoint`, `stop` and `upgrade` need of this job.
            plan["jar-id"] = serde_json::json!(jar_id);
            write_plan(&exports, &id, &plan)?;
            println!("{id}");
        }
        FlinkCommand::List => {
            let jobs = jobmanager.jobs().map_err(msg)?;
            println!("{:<32}  {:<10}  NAME", "JOB ID", "STATE");
            for job in jobs {
                println!("{:<32}  {:<10}  {}", job.id, job.state, job.name);
            }
        }
        FlinkCommand::Savepoint { job_id, dir } => savepoint(&jobmanager, &exports, job_id, dir.as_deref(), false)?,
        FlinkCommand::Stop { job_id, savepoint: _, dir } => {
            savepoint(&jobmanager, &exports, job_id, dir.as_deref(), true)?
        }
        FlinkCommand::Upgrade { job_id, operators } => {
            let replacements = operators
                .iter()
                .map(|o| {
                    let (uid, module) =
                        o.split_once('=').ok_or_else(|| anyhow!("--operator {o}: expected UID=MODULE"))?;
                    Ok((uid.to_string(), PathBuf::from(module)))
                })
                .collect::<Result<Vec<_>>>()?;
            let engine = WasmEngine::new(super::module_cache_dir()).map_err(msg)?;
            let plan = flink::upgrade::read_plan(&exports, job_id).map_err(msg)?;
            let upgraded = flink::upgrade::check(&plan, &replacements, &engine).map_err(msg)?;
            let uids: Vec<String> = replacements.iter().map(|(uid, _)| uid.clone()).collect();
            match flink::upgrade::upgrade(&jobmanager, &exports, job_id, (&plan, &upgraded), &uids).map_err(msg)? {
                flink::upgrade::Upgraded::Switched { checkpoint, pause_ms, savepoint } => println!(
                    "upgraded {} in job {job_id} (no restart): every subtask switched at checkpoint {checkpoint}; \
                     pause {pause_ms:.1} ms; savepoint before the switch: {savepoint}",
                    uids.join(", ")
                ),
                flink::upgrade::Upgraded::RolledBack { cause, job_id: going_on } => {
                    if going_on != *job_id {
                        write_plan(&exports, &going_on, &plan)?;
                    }
                    return Err(anyhow!(
                        "the new module failed after the switch ({cause}); rolled back: job {going_on} goes on with \
                         the modules it ran before{}",
                        if going_on == *job_id {
                            " (in place, from the switch's checkpoint)"
                        } else {
                            " (resubmitted from the savepoint taken before the switch)"
                        }
                    ));
                }
            }
        }
        FlinkCommand::Cancel { job_id } => {
            jobmanager.cancel(job_id).map_err(msg)?;
            println!("canceled {job_id}");
        }
        FlinkCommand::Cluster(command) => match command {
            ClusterCommand::Install { flink_home } => {
                println!("{}", flink::flink_home(flink_home.as_deref(), true).map_err(msg)?.display());
            }
            ClusterCommand::Start { place, port, taskmanagers, slots } => {
                let cluster = place.cluster()?;
                let url = cluster.start(*port, *taskmanagers, *slots).map_err(msg)?;
                println!(
                    "Flink {} on {url}: a JobManager and {taskmanagers} TaskManagers of {slots} slots; files in {}",
                    flink::FLINK_VERSION,
                    cluster.dir.display()
                );
            }
            ClusterCommand::AddTaskmanager { place } => place.cluster()?.add_taskmanager().map_err(msg)?,
            ClusterCommand::Stop { place } => {
                let cluster = place.cluster()?;
                cluster.url().map_err(|e| anyhow!(e))?;
                cluster.stop().map_err(msg)?;
            }
        },
    }
    Ok(())
}

/// Takes (or stops with) a savepoint of Flink job `job_id`, prints its location, then writes the
/// weir savepoint of the same state into its directory as `weir/` and prints that (for a job the
/// runner runs, whose plan `weir flink run` left in `exports`).
fn savepoint(
    jobmanager: &JobManager,
    exports: &std::path::Path,
    job_id: &str,
    dir: Option<&str>,
    stop: bool,
) -> Result<()> {
    let msg = anyhow::Error::msg;
    let job_exports = exports.join(job_id);
    let plan: Option<serde_json::Value> =
        std::fs::read(job_exports.join("plan.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let marker = job_exports.join("exporting");
    if plan.is_some() {
        std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
    }
    let taken = jobmanager.savepoint(job_id, dir, stop);
    let _ = std::fs::remove_file(&marker);
    let location = taken.map_err(msg)?;
    println!("{location}");
    let Some(plan) = plan else {
        eprintln!("(job {job_id} was not submitted by `weir flink run`: no weir savepoint of it)");
        return Ok(());
    };
    let id = jobmanager.savepoint_id(job_id, &location).map_err(msg)?;
    let exported = job_exports.join(id.to_string());
    let Some(local) = location.strip_prefix("file:") else {
        eprintln!("(the savepoint is not on a file system weir writes to: no weir savepoint of it)");
        return Ok(());
    };
    let engine = WasmEngine::new(super::module_cache_dir()).map_err(msg)?;
    let at = std::path::Path::new(local.trim_start_matches("//")).join("weir");
    let written = flink::savepoints::weir_savepoint(&exported, &plan, &engine, (job_id, id), &at).map_err(msg)?;
    let _ = std::fs::remove_dir_all(&exported);
    println!("{written}");
    Ok(())
}

/// Records the plan of Flink job `id` for the verbs that need it later.
fn write_plan(exports: &std::path::Path, id: &str, plan: &serde_json::Value) -> Result<()> {
    let file = exports.join(id).join("plan.json");
    std::fs::create_dir_all(exports.join(id))?;
    std::fs::write(&file, plan.to_string()).with_context(|| format!("writing {}", file.display()))
}
