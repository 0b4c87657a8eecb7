//! Savepoints asked of a running job, and the library of those taken.
use std::sync::Arc;

use super::Jobs;
use super::SavepointError;
use super::record::*;
use super::store::update;
use crate::checkpoint::savepoint::SavepointFormat;
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
}
