//! Savepoints asked of a running job, and the library of those taken.
use std::sync::Arc;

use super::Jobs;
use super::record::*;
use super::store::update;
use super::{DisposeError, SavepointError};
use crate::checkpoint::savepoint::{SavepointFormat, SavepointLocation, SavepointSink};
use crate::control::lock;
use crate::runtime::SavepointRequest;

impl Jobs {
    /// Asks running job `id` for a savepoint into `dir` (else the job's savepoint directory),
    /// its state in form `format`; with `stop`, the job then stops (stop-with-savepoint), after
    /// firing every event-time timer first with `drain`.
    /// Returns the trigger id to ask [`Jobs::savepoint_status`] with.
    pub fn savepoint(
        &self,
        id: &str,
        dir: Option<&str>,
        format: SavepointFormat,
        stop: bool,
        drain: bool,
    ) -> Result<String, SavepointError> {
        let (job, plan) = self.running(id, "take a savepoint")?;
        let sink = Arc::new(plan.savepoint_sink(dir, format).map_err(SavepointError::Target)?);
        let trigger = self.request_id(id);
        lock(&job.triggers).insert(trigger.clone(), SavepointStatus::InProgress);
        let (runner, dir, key, written) = (job.clone(), self.dir.clone(), trigger.clone(), sink.clone());
        let reason = if stop { SavepointReason::Stop } else { SavepointReason::User };
        let done = Box::new(move |result: Result<u64, String>| {
            let status = match result {
                Ok(_) => {
                    record_savepoint(dir.as_deref(), &runner, &written, reason);
                    SavepointStatus::Completed { location: written.location() }
                }
                Err(cause) => SavepointStatus::Failed { cause },
            };
            lock(&runner.triggers).insert(key, status);
        });
        let request = SavepointRequest { sink, stop, handover: false, drain: stop && drain, done };
        if job.request_savepoint(request).is_err() {
            lock(&job.triggers).insert(trigger.clone(), SavepointStatus::Failed { cause: "the job ended".into() });
        }
        Ok(trigger)
    }

    /// Where savepoint `trigger` of job `id` stands, if both exist.
    pub fn savepoint_status(&self, id: &str, trigger: &str) -> Option<SavepointStatus> {
        let job = lock(&self.jobs).get(id).cloned()?;
        lock(&job.triggers).get(trigger).cloned()
    }

    /// Every completed savepoint of every job that is still there, oldest first (a local one whose
    /// `_metadata` is gone, deleted by hand, is left out).
    pub fn savepoints(&self) -> Vec<LibraryEntry> {
        let jobs = self.list();
        let forks_of = |location: &str| {
            let forked = jobs.iter().filter(|j| j.lineage.as_ref().is_some_and(|l| l.fork && l.savepoint == location));
            forked.map(|j| j.id.clone()).collect()
        };
        let mut all: Vec<LibraryEntry> = jobs
            .iter()
            .flat_map(|j| &j.savepoints)
            .filter(|s| still_there(&s.location))
            .map(|s| LibraryEntry { forks: forks_of(&s.location), savepoint: s.clone() })
            .collect();
        all.sort_by_key(|s| s.savepoint.taken_at);
        all
    }

    /// Deletes savepoint `location` of the library (see [`SavepointLocation::dispose`]) and drops
    /// it from its job's record. Refused, whether the library has it or not, while a job that has
    /// not ended may still go back to it: the savepoint a job started from (its restarts before a
    /// first checkpoint do), or the one a rollback of its last upgrade would resume from. One
    /// whose `_metadata` is gone already is only dropped.
    pub fn dispose_savepoint(&self, location: &str) -> Result<(), DisposeError> {
        let jobs: Vec<Arc<super::Job>> = lock(&self.jobs).values().cloned().collect();
        for job in &jobs {
            let info = lock(&job.info);
            let started_from = info.lineage.as_ref().is_some_and(|l| l.savepoint == location);
            let rolls_back_to = [&info.rollback_point, &info.canary_start]
                .into_iter()
                .any(|point| point.as_ref().is_some_and(|r| r.savepoint == location));
            if !info.state.is_terminal() && (started_from || rolls_back_to) {
                let why = if rolls_back_to { "a rollback of its last upgrade" } else { "a restart" };
                return Err(DisposeError::InUse(format!(
                    "job {} ({}) is {} and may still go back to savepoint {location} ({why}); dispose of it once the job has ended",
                    info.id, info.name, info.state
                )));
            }
        }
        let owner = jobs.iter().find(|j| lock(&j.info).savepoints.iter().any(|s| s.location == location));
        let owner = owner.ok_or_else(|| DisposeError::NotFound(location.to_string()))?;
        if still_there(location) {
            let at = SavepointLocation::parse(location, std::path::Path::new("/")).map_err(DisposeError::Failed)?;
            at.dispose().map_err(DisposeError::Failed)?;
        }
        update(self.dir.as_deref(), owner, |i| i.savepoints.retain(|s| s.location != location));
        Ok(())
    }
}

/// A savepoint of the library, as the API lists it.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LibraryEntry {
    /// The savepoint.
    #[serde(flatten)]
    pub savepoint: SavepointRecord,
    /// The jobs forked from it.
    pub forks: Vec<String>,
}

/// Whether savepoint `location` is still there: a URL is taken to be (asking the store on every
/// listing would cost a request per savepoint), a local directory if it holds a `_metadata`.
fn still_there(location: &str) -> bool {
    location.contains("://") || std::path::Path::new(location).join("_metadata").is_file()
}

/// Records in `job`'s library the savepoint `sink` wrote, taken for `reason`.
pub(super) fn record_savepoint(
    dir: Option<&std::path::Path>,
    job: &super::Job,
    sink: &SavepointSink,
    reason: SavepointReason,
) {
    let Some(m) = sink.metadata() else { return };
    let location = sink.location();
    update(dir, job, |i| {
        i.savepoints.push(SavepointRecord {
            location,
            job_id: i.id.clone(),
            job_name: i.name.clone(),
            taken_at: m.taken_at,
            size: m.size(),
            // Every savepoint but one asked for while the job runs on stops it.
            stopped: reason != SavepointReason::User,
            reason,
            format: m.state_format,
            format_version: m.format_version,
            operators: m.operators.iter().map(|o| (o.uid.clone(), o.module.to_string())).collect(),
        })
    });
}
