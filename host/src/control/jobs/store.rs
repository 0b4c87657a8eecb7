//! Persistence of job records: `<data-dir>/jobs/<id>.json`, rewritten whenever a record changes.
use std::path::Path;

use super::Job;
use super::record::*;
use crate::control::{lock, write_atomically};

/// Changes job `job`'s record, persists it, and wakes whoever waits for a change.
pub(super) fn update(dir: Option<&Path>, job: &Job, change: impl FnOnce(&mut JobInfo)) {
    let mut info = lock(&job.info);
    change(&mut info);
    persist(dir, &info);
    job.changed.notify_all();
}

pub(super) fn persist(dir: Option<&Path>, info: &JobInfo) {
    let Some(dir) = dir else { return };
    let path = dir.join(format!("{}.json", info.id));
    let bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
    if let Err(e) = write_atomically(&path, &bytes) {
        tracing::warn!("cannot persist job {} to {}: {e}", info.id, path.display());
    }
}
