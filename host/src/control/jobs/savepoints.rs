//! Savepoints asked of a running job, and the library of those taken.
use std::sync::Arc;

use super::Jobs;
use super::record::*;
use super::store::update;
use super::{DisposeError, SavepointError};
use crate::checkpoint::savepoint::{SavepointFormat, SavepointLocation};
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
        let done = Box::new(move |result: Result<u64, String>| {
            let status = match result {
                Ok(_) => {
                    let location = written.location();
                    if let Some(m) = written.metadata() {
                        update(dir.as_deref(), &runner, |i| {
                            i.savepoints.push(SavepointRecord {
                                location: location.clone(),
                                job_id: i.id.clone(),
                                job_name: i.name.clone(),
                                taken_at: m.taken_at,
                                size: m.size(),
                                stopped: stop,
                                format: m.state_format,
                                format_version: m.format_version,
                                operators: m.operators.iter().map(|o| (o.uid.clone(), o.module.to_string())).collect(),
                            })
                        });
                    }
                    SavepointStatus::Completed { location }
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

    /// Every completed savepoint of every job, oldest first.
    pub fn savepoints(&self) -> Vec<SavepointRecord> {
        let mut all: Vec<SavepointRecord> = self.list().into_iter().flat_map(|j| j.savepoints).collect();
        all.sort_by_key(|s| s.taken_at);
        all
    }

    /// Deletes savepoint `location` of the library (see [`SavepointLocation::dispose`]) and drops
    /// it from its job's record. Refused while a job that has not ended may still go back to it:
    /// the savepoint a job started from (its restarts before a first checkpoint do), or the one
    /// a rollback of its last upgrade would resume from.
    pub fn dispose_savepoint(&self, location: &str) -> Result<(), DisposeError> {
        let jobs: Vec<Arc<super::Job>> = lock(&self.jobs).values().cloned().collect();
        let owner = jobs.iter().find(|j| lock(&j.info).savepoints.iter().any(|s| s.location == location));
        let owner = owner.ok_or_else(|| DisposeError::NotFound(location.to_string()))?;
        for job in &jobs {
            let info = lock(&job.info);
            let started_from = info.lineage.as_ref().is_some_and(|l| l.savepoint == location);
            let rolls_back_to = info.rollback_point.as_ref().is_some_and(|r| r.savepoint == location);
            if !info.state.is_terminal() && (started_from || rolls_back_to) {
                let why = if rolls_back_to { "a rollback of its last upgrade" } else { "a restart" };
                return Err(DisposeError::InUse(format!(
                    "job {} ({}) is {} and may still go back to savepoint {location} ({why}); dispose of it once the job has ended",
                    info.id, info.name, info.state
                )));
            }
        }
        let at = SavepointLocation::parse(location, std::path::Path::new("/")).map_err(DisposeError::Failed)?;
        at.dispose().map_err(DisposeError::Failed)?;
        update(self.dir.as_deref(), owner, |i| i.savepoints.retain(|s| s.location != location));
        Ok(())
    }
}
