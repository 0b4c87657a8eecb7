//! `weir run JOB.toml`: runs one job in the foreground and serves its API meanwhile, so it can be
//! watched or canceled from another terminal (like Flink's MiniCluster).
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::serve::{Access, check_exposure, serve_api};
use crate::api::{ApiState, DEFAULT_BODY_LIMIT};
use crate::checkpoint::storage::Storage;
use crate::checkpoint::{Restore, paths};
use crate::control::{JobInfo, JobState, Jobs, ModuleStore, StoreModules};
use crate::job::{self, JobPlan, ModuleFiles, Placement};
use crate::runtime::checkpoint_stats::{CheckpointStats, TaskCheckpointStats};
use crate::wasm::WasmEngine;

/// The API's address when none is given; taken only if free.
const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// The job file (TOML).
    job: PathBuf,
    /// Address of this job's API, or "none". By default 127.0.0.1:8081, or a free port when that
    /// one is busy.
    #[arg(long)]
    listen: Option<String>,
    /// Serve the API on a non-loopback address without a token.
    #[arg(long)]
    insecure: bool,
    /// Where modules uploaded for upgrades of this job are kept (default: weir-data beside the
    /// job file, where its checkpoints go by default).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Resume from a checkpoint: "latest" (the newest intact one in the job's checkpoint
    /// storage) or the path of a checkpoint directory (`.../<job>/chk-<n>`).
    #[arg(long, value_name = "latest|PATH", conflicts_with = "from_savepoint")]
    from_checkpoint: Option<String>,
    /// Start from a savepoint: its directory (`.../savepoint-<job>-<suffix>`) or URL. State goes
    /// to operators by uid, and to their declared states by name.
    #[arg(long, value_name = "PATH")]
    from_savepoint: Option<String>,
    /// With --from-savepoint: start even if some of its state has no operator (or declared
    /// state) to go to; that state is left behind.
    #[arg(long, requires = "from_savepoint")]
    allow_non_restored_state: bool,
    /// Set by `weir fork`: the job is a new one beside the savepoint's.
    #[arg(skip)]
    fork: bool,
    /// Set by `weir check`: no summary at the end.
    #[arg(skip)]
    quiet: bool,
}

impl RunArgs {
    /// `weir fork SAVEPOINT JOB`: run `job` from `savepoint` as a new job, beside the job the
    /// savepoint was taken of.
    pub(super) fn fork(savepoint: &str, job: &Path, allow_non_restored_state: bool) -> RunArgs {
        RunArgs {
            job: job.to_path_buf(),
            listen: None,
            insecure: false,
            data_dir: None,
            from_checkpoint: None,
            from_savepoint: Some(savepoint.to_string()),
            allow_non_restored_state,
            fork: true,
            quiet: false,
        }
    }

    /// `weir run JOB --listen none` without the summary: a run of the CLI's own (`weir check`).
    pub(super) fn quiet(job: &Path) -> RunArgs {
        RunArgs {
            job: job.to_path_buf(),
            listen: Some("none".to_string()),
            insecure: false,
            data_dir: None,
            from_checkpoint: None,
            from_savepoint: None,
            allow_non_restored_state: false,
            fork: false,
            quiet: true,
        }
    }
}

/// The checkpoint `--from-checkpoint` names.
fn checkpoint_to_resume(from: &str, plan: &JobPlan, base: &Path) -> anyhow::Result<Restore> {
    let name = plan.name();
    let Some(storage) = plan.checkpoint_storage() else {
        bail!("--from-checkpoint: job '{name}' has no [checkpointing] (with an interval above 0s) to resume with");
    };
    if from == "latest" {
        return plan
            .latest_checkpoint_of_name()
            .map_err(anyhow::Error::msg)?
            .with_context(|| format!("no completed checkpoint of job '{name}' in {}", storage.url()));
    }
    let dir = std::path::absolute(from)?;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let id = paths::parse_checkpoint_dir(&dir_name)
        .with_context(|| format!("--from-checkpoint {from}: not \"latest\" nor a checkpoint directory (chk-<n>)"))?;
    let job_dir = dir.parent().context("a checkpoint directory lies in its job's directory")?;
    if job_dir.file_name().map(|n| n.to_string_lossy().into_owned()) != Some(paths::job_dir(name)) {
        bail!("--from-checkpoint {from}: it is not a checkpoint of job '{name}' (wrong job directory)");
    }
    let root = job_dir.parent().context("no storage directory above the job's")?;
    let storage = Storage::open(&format!("file://{}", root.display()), base)?;
    Restore::at(storage, name, id).map_err(anyhow::Error::msg)
}

/// The listener for the job's API, if any.
fn listener(args: &RunArgs, token: &Option<String>) -> anyhow::Result<Option<TcpListener>> {
    match args.listen.as_deref() {
        Some("none") => Ok(None),
        Some(addr) => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--listen {addr}: not an address like 127.0.0.1:8081, nor none"))?;
            check_exposure(addr, token, args.insecure)?;
            Ok(Some(TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?))
        }
        None => match TcpListener::bind(DEFAULT_LISTEN) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                Ok(Some(TcpListener::bind("127.0.0.1:0").context("cannot listen on a free loopback port")?))
            }
            Err(e) => Err(e).with_context(|| format!("cannot listen on {DEFAULT_LISTEN}")),
        },
    }
}

pub(super) fn run(args: &RunArgs, Access { token, allowed_hosts }: Access) -> anyhow::Result<()> {
    let text = job::read(&args.job)?;
    let engine = Arc::new(WasmEngine::new(super::module_cache_dir()).map_err(anyhow::Error::msg)?);
    let base = args.job.parent().map(Path::to_path_buf).unwrap_or_default();
    let label = format!("job file {}", args.job.display());
    // The local user's own job: its paths are theirs to choose.
    let local = Arc::new(Placement::local());
    let loading = std::time::Instant::now();
    let plan = JobPlan::new(text, &label, &base, &mut ModuleFiles::new(base.clone(), &engine), local)?;
    let loaded = loading.elapsed();
    // Modules uploaded to this run's API for upgrades, as `weir serve` keeps them.
    let data = args.data_dir.clone().unwrap_or_else(|| base.join("weir-data"));
    let modules = ModuleStore::open(data.join("modules"), engine.clone())
        .with_context(|| format!("cannot open the module store in {}", data.display()))?;
    let name = plan.name().to_string();
    let (plan, restore) = match (&args.from_checkpoint, &args.from_savepoint) {
        (Some(from), _) => {
            let restore = checkpoint_to_resume(from, &plan, &base)?;
            eprintln!("weir run: resuming job '{name}' from {}", restore.describe());
            // The run goes on as the job that wrote the checkpoint.
            let plan = match restore.job_id() {
                "" => plan,
                id => plan.with_id(id),
            };
            (plan, Some(Arc::new(restore)))
        }
        (None, Some(path)) => {
            let restore = Restore::savepoint(path, Path::new(".")).map_err(anyhow::Error::msg)?.forked(args.fork);
            if args.fork {
                restore.check_fork(&name).map_err(anyhow::Error::msg)?;
            }
            eprintln!("weir run: starting job '{name}' from savepoint {}", restore.location());
            (plan, Some(Arc::new(restore.allowing_non_restored_state(args.allow_non_restored_state))))
        }
        (None, None) => (plan, None),
    };
    // A canary the checkpoint or savepoint holds goes on (its module is in the module store,
    // where an upgrade through this run's API put it).
    let adopted = restore.as_ref().map(|r| plan.with_restored_canaries(r, &mut StoreModules(&modules))).transpose();
    let plan = match adopted.map_err(anyhow::Error::msg)?.flatten() {
        Some(adopted) => {
            eprintln!("weir run: job '{name}' goes on with the canary it ran");
            adopted
        }
        None => plan,
    };
    let graph = plan.build(0, restore.clone())?;

    let jobs = Arc::new(Jobs::open(None, Placement::local())?);
    let listener = listener(args, &token)?;
    let info = jobs.start(plan, graph, restore);
    if let Some(listener) = listener {
        eprintln!("weir run: job {} API at http://{}/v1/jobs/{}", info.id, listener.local_addr()?, info.id);
        let modules = Some(Arc::new(modules));
        let state = Arc::new(ApiState { jobs: jobs.clone(), modules, single_job: true, token, base, allowed_hosts });
        std::thread::Builder::new()
            .name("weir-api".into())
            .spawn(move || {
                if let Err(e) = serve_api(listener, state, DEFAULT_BODY_LIMIT) {
                    tracing::warn!("the job's API stopped: {e:#}");
                }
            })
            .context("cannot start the API thread")?;
    }

    let info = jobs.wait_until_ended(&info.id).context("the job vanished from its registry (a weir bug)")?;
    match info.state {
        JobState::Finished if info.savepoints.last().is_some_and(|s| s.stopped) => {
            let location = info.savepoints.last().map(|s| s.location.as_str()).unwrap_or_default();
            eprintln!("weir run: job '{name}' stopped with savepoint {location}");
            print_summary(&info, &jobs.checkpoints(&info.id).unwrap_or_default(), loaded);
            // The client that asked for the stop is still asking where the savepoint went.
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        }
        JobState::Finished if args.quiet => Ok(()),
        JobState::Finished => {
            print_summary(&info, &jobs.checkpoints(&info.id).unwrap_or_default(), loaded);
            Ok(())
        }
        JobState::Canceled => bail!("job '{name}' was canceled"),
        _ => bail!("job '{name}' failed: {}", info.failure.as_deref().unwrap_or("unknown cause")),
    }
}

/// What a finished run did; `loaded` is how long loading (and compiling) its modules took before
/// it started, which its run time does not include.
fn print_summary(info: &JobInfo, checkpoints: &CheckpointStats, loaded: Duration) {
    let seconds = |ms: u64| ms.saturating_sub(info.submitted_at) as f64 / 1000.0;
    eprintln!("job '{}' finished in {:.3} s", info.name, seconds(info.ended_at.unwrap_or(info.submitted_at)));
    eprintln!(
        "  modules loaded in {:.3} s before the start (compiled on first use, then cached)",
        loaded.as_secs_f64()
    );
    if let Some(kib) = peak_rss_kib() {
        eprintln!("  peak memory {:.1} MiB", kib as f64 / 1024.0);
    }
    if let Some(first) = info.first_event_at {
        eprintln!("  first event at a sink {:.3} s after the start (at {first} ms since the epoch)", seconds(first));
    }
    if let Some(c) = &checkpoints.latest.completed {
        let longest = |f: fn(&TaskCheckpointStats) -> f64| c.tasks.values().map(f).fold(0.0, f64::max);
        eprintln!(
            "  checkpoint {}: size {:.1} MiB ({:.1} MiB uploaded), end-to-end {:.3} s, sync {:.1} ms, async {:.1} ms \
             ({} completed, {} failed)",
            c.id,
            c.state_size as f64 / (1 << 20) as f64,
            c.checkpointed_size as f64 / (1 << 20) as f64,
            c.end_to_end_duration_ms / 1000.0,
            longest(|t| t.sync_duration_ms),
            longest(|t| t.async_duration_ms),
            checkpoints.counts.completed,
            checkpoints.counts.failed,
        );
    }
    for v in &info.vertices {
        let cpu = match &v.chained_into {
            Some(uid) => format!("runs in '{uid}'"),
            None => format!("cpu {:.3} s", v.cpu_seconds),
        };
        let late = if v.late_events > 0 { format!(", {} late", v.late_events) } else { String::new() };
        let quarantined = match v.quarantined {
            0 => String::new(),
            n => format!(", {n} quarantined"),
        };
        eprintln!(
            "  {:<8} {:<24} parallelism {:<3} events in {:<10} out {:<10} {cpu}{late}{quarantined}",
            v.kind, v.uid, v.parallelism, v.events_in, v.events_out
        );
    }
}

/// The process's peak resident set size, where the OS reports it (Linux: `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
