//! The `weir` command line: thin verbs over the library and, for the client verbs, the REST API.
//!
//! Exit codes: 0 ok; 1 the job, its file or the server said no (the message is printed); 2 usage
//! error; 3 the server cannot be reached.
mod check;
mod client;
mod compare;
mod flink;
mod replay;
mod run;
mod savepoint;
mod savepoint_write;
mod serve;
mod shadow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::checkpoint::savepoint::SavepointFormat;

/// weir: stream processing with WebAssembly operators and host-owned state.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The server client verbs talk to.
    #[arg(long, global = true, env = "WEIR_SERVER", default_value = "http://127.0.0.1:8081")]
    server: String,
    /// Bearer token: the one `serve` and `run` require, and the one client verbs send.
    #[arg(long, global = true, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables (client verbs).
    #[arg(long, global = true)]
    json: bool,
    /// A host name `serve` and `run` answer requests for besides IP addresses and localhost
    /// (requests naming any other host are refused, against DNS rebinding); repeatable.
    #[arg(
        long = "allowed-host",
        value_name = "NAME",
        global = true,
        env = "WEIR_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job in the foreground until its bounded sources are exhausted, serving its API.
    Run(run::RunArgs),
    /// Run a long-lived host with the REST API, a module store and a job registry.
    Serve(serve::ServeArgs),
    /// Upload or list modules on a server.
    #[command(subcommand)]
    Modules(client::ModulesCommand),
    /// Upload the modules a job file names and submit the job to a server; prints its id.
    Submit {
        /// The job file (TOML).
        job: PathBuf,
        /// Start from this savepoint directory (or URL), as the server sees it.
        #[arg(long, value_name = "PATH")]
        from_savepoint: Option<String>,
        /// Start even if some of the savepoint's state has no operator to go to.
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
    },
    /// List a server's jobs.
    Jobs,
    /// Show a job's state and per-operator event counts.
    Status {
        /// The job's id.
        job_id: String,
    },
    /// Cancel a running job.
    Cancel {
        /// The job's id.
        job_id: String,
    },
    /// Show a job's checkpoint statistics: counts, latest, history.
    Checkpoints {
        /// The job's id.
        job_id: String,
    },
    /// Take a savepoint of a running job (prints where it is), or inspect or dispose of one.
    Savepoint(SavepointArgs),
    /// Stop a running job with a savepoint: its sources stop at the savepoint's barrier, the
    /// sinks commit everything before it, and the job finishes. Prints the savepoint's path.
    Stop {
        /// The job's id.
        job_id: String,
        /// Take a savepoint (always: stopping is stop-with-savepoint, as in Flink).
        #[arg(long)]
        savepoint: bool,
        /// Advance the watermark to the end of time before the savepoint, so that every event-time
        /// timer fires and every window is emitted (Flink's --drain).
        #[arg(long)]
        drain: bool,
        /// Where the savepoint goes (default: the job's `savepoint-dir`).
        #[arg(long, value_name = "URL|DIR")]
        dir: Option<String>,
        /// The form of its state: canonical (any backend, any parallelism) or native (a RocksDB
        /// job's database files: faster, restores into RocksDB only).
        #[arg(long, value_name = "canonical|native", default_value = "canonical")]
        format: SavepointFormat,
    },
    /// List the savepoints a server has taken: job, time, size, modules, path.
    Savepoints,
    /// Run job files on an Apache Flink cluster: submit, list, savepoint, stop, cancel, and a
    /// local cluster to try it.
    Flink(flink::FlinkArgs),
    /// Serve an operator module to one subtask of a Flink job over a Unix socket: the Flink
    /// runner's Wasm operators start one worker per subtask (see `weir flink`).
    Worker {
        /// The subtask's socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Check an operator module against the contract it targets and show its description; with
    /// --like, run it and a reference over the same generated events and show the first line
    /// where their outputs differ.
    Check(check::CheckArgs),
    /// Replay one key of a savepoint through an operator's module (or a fix to try), event by
    /// event: prints the key's state before and after each event, the output and the timers set
    /// and fired, as JSON lines. Offline, on a virtual clock; nothing reaches a sink.
    Replay(replay::ReplayArgs),
    /// Show, key by key, where the committed outputs of two jobs diverge (job ids on the server,
    /// or two output directories): the result of a blue/green or A/B trial.
    Compare {
        /// A job id, or an output directory.
        a: String,
        /// A job id, or an output directory.
        b: String,
        /// The file sink whose output is compared, by uid (default: each job's first file sink).
        #[arg(long)]
        sink: Option<String>,
    },
    /// Start a second, independent job from an existing savepoint, with the modules and sinks its
    /// job file names (which must give it a name of its own), while the original runs on: in the
    /// foreground like `weir run`, or on a server with --submit. It records its lineage.
    Fork {
        /// The savepoint's directory or URL.
        savepoint: String,
        /// The new job's file (TOML).
        job: PathBuf,
        /// Submit it to the server instead of running it here.
        #[arg(long)]
        submit: bool,
        /// Start even if some of the savepoint's state has no operator to go to.
        #[arg(long)]
        allow_non_restored_state: bool,
    },
    /// Run a new module beside a running operator, on the same input and a copy-on-write view of
    /// its state, comparing the two outputs line by line; the shadow's output reaches no sink.
    /// `weir shadow status JOB` shows what it found, `--stop` ends it; promoting it is an upgrade.
    Shadow(shadow::ShadowArgs),
    /// Swap operators' modules under a running job: the new modules are checked against the
    /// state first, then the job stops at a savepoint and goes on with them, its state kept in
    /// place. Prints the savepoint (for a rollback) and the pause. With --canary, the new module
    /// serves a share of the key groups beside the old one; --promote and --abort end it.
    Upgrade {
        /// The job's id.
        job_id: String,
        /// UID=MODULE: the operator and its new module, a .wasm file (uploaded first) or
        /// sha256:<hex> of an uploaded one. Repeat for several operators.
        #[arg(
            long = "operator",
            value_name = "UID=MODULE",
            required_unless_present_any = ["rollback", "canary", "promote", "abort"]
        )]
        operators: Vec<String>,
        /// Run the new modules as canaries beside the old ones, serving this share of the key
        /// groups (such as 10%); without --operator, give the job's canaries this share.
        #[arg(long, value_name = "SHARE", conflicts_with = "rollback")]
        canary: Option<String>,
        /// With --canary: a condition that aborts the canary by itself as soon as it holds:
        /// errors>N (failed calls of its module, or events it set aside) or out-ratio<R / out-ratio>R (its events out
        /// per event in over the old module's). Repeat for several.
        #[arg(long, value_name = "COND", requires = "canary")]
        abort_if: Vec<String>,
        /// With --abort-if: how the canary aborts then (hand-back, the default, or rollback).
        #[arg(long, value_name = "hand-back|rollback", requires = "canary")]
        abort_by: Option<String>,
        /// Promote the job's canaries: their modules take over every key group.
        #[arg(long, conflicts_with_all = ["rollback", "canary", "operators", "abort"])]
        promote: bool,
        /// Abort the job's canaries: hand-back (the default) gives their key groups back to the
        /// old modules with their state; rollback returns the whole job to the savepoint taken
        /// when the canary started (needed when the canary changed the state's layout).
        #[arg(
            long,
            value_name = "hand-back|rollback",
            num_args = 0..=1,
            default_missing_value = "hand-back",
            conflicts_with_all = ["rollback", "canary", "operators"]
        )]
        abort: Option<String>,
        /// Go back from the job's last upgrade instead: the modules it ran before, from the
        /// savepoint taken before the swap.
        #[arg(long, conflicts_with = "operators")]
        rollback: bool,
        /// Only try the new modules, changing nothing: each migrates the state of a sample of its
        /// operator's key groups (from the latest checkpoint, or a savepoint taken for it) in a
        /// scratch sandbox; prints what migrated, what failed, the projected pause and memory.
        /// Every upgrade runs this trial first and is refused if it fails.
        #[arg(long, conflicts_with_all = ["rollback", "no_trial"])]
        trial: bool,
        /// Upgrade without the trial.
        #[arg(long, conflicts_with = "rollback")]
        no_trial: bool,
        /// Key groups the trial takes per operator subtask.
        #[arg(long, value_name = "N", default_value_t = crate::control::TRIAL_SAMPLE)]
        sample: u32,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointAction>,
    /// The running job to take a savepoint of.
    job_id: Option<String>,
    /// Where the savepoint goes (default: the job's `savepoint-dir`).
    #[arg(long, value_name = "URL|DIR")]
    dir: Option<String>,
    /// The form of its state: canonical (any backend, any parallelism) or native (a RocksDB
    /// job's database files: faster, restores into RocksDB only).
    #[arg(long, value_name = "canonical|native", default_value = "canonical")]
    format: SavepointFormat,
}

#[derive(Subcommand)]
enum SavepointAction {
    /// Print a savepoint's state as JSON lines, without running anything.
    Inspect {
        /// The savepoint's directory (or URL).
        path: String,
        /// Only this operator.
        #[arg(long, value_name = "UID")]
        operator: Option<String>,
        /// Only this state.
        #[arg(long, value_name = "NAME")]
        state: Option<String>,
    },
    /// Write a new savepoint from an existing one (never changed) or from nothing: set or delete
    /// keys' state, bootstrap an operator's state from a file, drop or rename operators and
    /// states. The result restores like any savepoint, at any parallelism.
    Write(Box<savepoint_write::WriteArgs>),
    /// Delete a savepoint (weir never deletes savepoints by itself). The server (--server) is
    /// asked first: it refuses a savepoint one of its jobs may still go back to, and drops one of
    /// its library from the list.
    Dispose {
        /// The savepoint's directory (or URL).
        path: String,
        /// Delete it without asking a server (when none runs jobs from it).
        #[arg(long)]
        force: bool,
    },
}

/// A failure the CLI reports with a specific exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The server could not be reached (exit code 3).
    #[error("cannot reach the weir server at {server}: {cause}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// Why.
        cause: String,
    },
}

/// Where compiled modules are cached: `$WEIR_CACHE_DIR`, else `$XDG_CACHE_HOME/weir/modules`,
/// else `~/.cache/weir/modules`; none when no home is known.
pub(crate) fn module_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("weir").join("modules"))
}

/// Whether log lines get ANSI colours: only when stderr is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
fn log_in_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs the CLI and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or journal gets plain text.
        .with_ansi(log_in_colour())
        // Spans (checkpoint phases at debug, guest calls at trace) log their time when they
        // close, when RUST_LOG enables their level.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir=info")),
        )
        .init();
    // A client verb piped into `head` ends quietly when the reader goes, as Unix tools do. (Not
    // `run` and `serve`: a client hanging up must never end them.)
    let hosts_jobs = matches!(cli.command, Command::Run(_) | Command::Serve(_) | Command::Fork { submit: false, .. });
    if hosts_jobs {
        crate::api::connections::raise_descriptor_limit();
    }
    if !hosts_jobs {
        // SAFETY: restores the default disposition of SIGPIPE before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let client = || client::Client::new(&cli.server, cli.token.clone(), cli.json);
    // Every verb that names a job takes the start of its id, as lists show it.
    let job = |id: &str| client().job_id(id);
    let access = || serve::Access { token: cli.token.clone(), allowed_hosts: cli.allowed_hosts.clone() };
    let result = match &cli.command {
        Command::Run(args) => run::run(args, access()),
        Command::Check(args) => check::check(args),
        Command::Replay(args) => replay::replay(args),
        Command::Flink(args) => flink::flink(args),
        Command::Worker { socket } => {
            crate::wasm::worker::serve(socket, module_cache_dir()).map_err(anyhow::Error::msg)
        }
        Command::Serve(args) => serve::serve(args, access()),
        Command::Modules(command) => client().modules(command),
        Command::Submit { job, from_savepoint, allow_non_restored_state } => {
            let savepoint = from_savepoint.as_deref().map(|s| client().savepoint_location(s)).transpose();
            savepoint.and_then(|s| client().submit(job, s.as_deref(), *allow_non_restored_state, false))
        }
        Command::Fork { savepoint, job, submit: true, allow_non_restored_state } => client()
            .savepoint_location(savepoint)
            .and_then(|s| client().submit(job, Some(&s), *allow_non_restored_state, true)),
        Command::Fork { savepoint, job, allow_non_restored_state, .. } => {
            run::run(&run::RunArgs::fork(savepoint, job, *allow_non_restored_state), access())
        }
        Command::Jobs => client().jobs(),
        Command::Status { job_id } => job(job_id).and_then(|id| client().status(&id)),
        Command::Cancel { job_id } => job(job_id).and_then(|id| client().cancel(&id)),
        Command::Checkpoints { job_id } => job(job_id).and_then(|id| client().checkpoints(&id)),
        Command::Savepoint(SavepointArgs { action: Some(action), .. }) => match action {
            SavepointAction::Inspect { path, operator, state } => client()
                .savepoint_location(path)
                .and_then(|path| savepoint::inspect(&path, operator.as_deref(), state.as_deref())),
            SavepointAction::Write(args) => match &args.from {
                Some(from) => {
                    client().savepoint_location(from).and_then(|from| savepoint_write::write(args, Some(from)))
                }
                None => savepoint_write::write(args, None),
            },
            SavepointAction::Dispose { path, force } => {
                client().savepoint_location(path).and_then(|path| savepoint::dispose(&path, *force, &client()))
            }
        },
        Command::Savepoint(SavepointArgs { job_id: Some(job_id), dir, format, .. }) => {
            job(job_id).and_then(|id| client().savepoint(&id, dir.as_deref(), *format, None))
        }
        Command::Savepoint(SavepointArgs { .. }) => {
            Err(anyhow::anyhow!("name a running job (weir savepoint JOB_ID), or use `savepoint inspect|dispose PATH`"))
        }
        Command::Stop { job_id, drain, dir, format, .. } => {
            job(job_id).and_then(|id| client().savepoint(&id, dir.as_deref(), *format, Some(*drain)))
        }
        Command::Savepoints => client().savepoints(),
        Command::Compare { a, b, sink } => compare::compare(a, b, sink.as_deref(), &client(), cli.json),
        Command::Shadow(args) => shadow::shadow(args, &client()),
        Command::Upgrade { job_id, rollback: true, .. } => job(job_id).and_then(|id| client().rollback(&id)),
        Command::Upgrade {
            job_id,
            operators,
            trial,
            no_trial,
            sample,
            canary,
            promote,
            abort,
            abort_if,
            abort_by,
            ..
        } => {
            let trial = match (trial, no_trial) {
                (true, _) => client::Trial::Only(*sample),
                (_, true) => client::Trial::Skip,
                _ => client::Trial::First(*sample),
            };
            let step = match (canary, promote, abort) {
                (Some(share), _, _) => {
                    Some(("canary", serde_json::json!({ "share": share, "abort-if": abort_if, "abort-by": abort_by })))
                }
                (_, true, _) => Some(("promote", serde_json::Value::Bool(true))),
                (_, _, Some(abort)) => Some(("abort", serde_json::Value::String(abort.clone()))),
                _ => None,
            };
            job(job_id).and_then(|id| client().upgrade(&id, operators, trial, step))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and the like: the reader has what it wanted.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            let unreachable = e.downcast_ref::<CliError>().is_some_and(|c| matches!(c, CliError::Unreachable { .. }));
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}
