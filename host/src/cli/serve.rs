//! `weir serve`, and the listener `weir run` shares with it.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::api::{self, ApiState};
use crate::control::{Jobs, ModuleStore, StoreModules};
use crate::job::{AllowedDirs, Placement};
use crate::wasm::WasmEngine;

#[derive(clap::Args)]
pub(super) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Where modules, compiled code and job records are kept.
    #[arg(long, default_value = "./weir-data")]
    data_dir: PathBuf,
    /// Serve on a non-loopback address without a token (anyone who can connect can run code).
    #[arg(long)]
    insecure: bool,
    /// Largest request body accepted, e.g. "64MiB".
    #[arg(long, default_value = "64MiB")]
    body_limit: bytesize::ByteSize,
    /// A directory jobs may read and write (sources, sinks, checkpoints, savepoints), besides the
    /// data directory; repeatable. With a token, beyond loopback or with any --allow-dir, jobs
    /// may use nothing else.
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dirs: Vec<PathBuf>,
}

/// Who the API answers: the token it requires, and the host names it answers for.
pub(super) struct Access {
    pub(super) token: Option<String>,
    pub(super) allowed_hosts: Vec<String>,
}

/// Refuses to expose the API beyond this machine without a token, unless told to.
pub(super) fn check_exposure(addr: SocketAddr, token: &Option<String>, insecure: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.is_none() && !insecure {
        bail!(
            "refusing to serve on {addr} without a token: anyone who can connect could run code here; \
             pass --token (or WEIR_TOKEN), listen on 127.0.0.1, or pass --insecure"
        );
    }
    Ok(())
}

/// Serves the API on `listener` until Ctrl-C, on a small tokio runtime of its own.
pub(super) fn serve_api(
    listener: std::net::TcpListener,
    state: Arc<ApiState>,
    body_limit: usize,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-api")
        .enable_all()
        .build()
        .context("cannot start the API runtime")?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let limit = api::connections::connection_limit();
        api::connections::serve(listener, api::router(state, body_limit), limit, shutdown).await;
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

pub(super) fn serve(args: &ServeArgs, Access { token, allowed_hosts }: Access) -> anyhow::Result<()> {
    check_exposure(args.listen, &token, args.insecure)?;
    let data = &args.data_dir;
    let engine = Arc::new(WasmEngine::new(Some(data.join("compiled"))).map_err(anyhow::Error::msg)?);
    let modules = ModuleStore::open(data.join("modules"), engine)
        .with_context(|| format!("cannot open the module store in {}", data.display()))?;
    let restricted = token.is_some() || !args.listen.ip().is_loopback() || !args.allow_dirs.is_empty();
    let allowed = match restricted {
        true => {
            let dirs: Vec<PathBuf> = std::iter::once(data.clone()).chain(args.allow_dirs.iter().cloned()).collect();
            AllowedDirs::within(&dirs).map_err(anyhow::Error::msg).context("--allow-dir")?
        }
        false => {
            eprintln!(
                "weir serve: jobs may read and write anywhere this user can (loopback, no token); pass --allow-dir \
                 DIR to confine them"
            );
            AllowedDirs::Anywhere
        }
    };
    let jobs = Jobs::open(Some(data.join("jobs")), Placement::server(data, allowed))
        .with_context(|| format!("cannot open the job registry in {}", data.display()))?;
    let listener =
        std::net::TcpListener::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let base = std::env::current_dir()?;
    let (jobs, modules) = (Arc::new(jobs), Arc::new(modules));
    // Resuming a job loads its modules, which may take long (or a guest may misbehave in them):
    // the API answers meanwhile.
    let (resumer, store, from) = (jobs.clone(), modules.clone(), base.clone());
    std::thread::Builder::new()
        .name("resume-jobs".into())
        .spawn(move || resumer.resume_interrupted(&mut StoreModules(&store), &from))
        .context("cannot start the thread that resumes jobs")?;
    eprintln!("weir serve: listening on http://{} (data in {})", listener.local_addr()?, data.display());
    let state = Arc::new(ApiState { jobs, modules: Some(modules), single_job: false, token, base, allowed_hosts });
    serve_api(listener, state, args.body_limit.as_u64() as usize)
}
