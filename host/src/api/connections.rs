//! How the API takes connections: at most a share of the process's file descriptors at once (the
//! rest are the jobs': checkpoints, sink files, connections to brokers and databases), each
//! closed when it sends no complete request head within [`HEADER_READ_TIMEOUT`] (an idle
//! keep-alive connection included). A connection over the limit waits in the listen backlog
//! until one closes, so a flood of idle connections delays the API by the timeout at most and
//! never takes a job's descriptors.
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// The longest a connection may take to send a request's head, or stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections the API holds at once, whatever the descriptors.
const MOST_CONNECTIONS: usize = 512;

/// Connections the API may hold at once: a quarter of the process's descriptors (the rest are
/// the jobs'), between 16 and [`MOST_CONNECTIONS`].
pub fn connection_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limit it reports into `limit`, which it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let descriptors = if known { limit.rlim_cur as usize } else { 1024 };
    (descriptors / 4).clamp(16, MOST_CONNECTIONS)
}

/// Raises the process's soft limit of file descriptors to its hard limit, as servers do: the
/// default soft limit (often 1,024) is lower than a host of many jobs needs.
pub fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the `rlimit` they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Serves `router` on `listener`, at most `limit` connections at once, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limit: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limit));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: the jobs' come first; try again shortly.
                    tracing::warn!("the API cannot take a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("an API connection ended: {e}");
            }
        });
    }
}
