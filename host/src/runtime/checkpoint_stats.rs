//! Checkpoint statistics of a job, in the shape of Flink's `GET /jobs/:id/checkpoints` (with
//! weir's kebab-case names and durations in milliseconds): counts, a summary of completed
//! checkpoints, the latest completed, failed and restored ones, and a bounded history.
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// Checkpoints kept in the history (Flink's `web.checkpoints.history` default).
pub const HISTORY: usize = 10;

/// Everything the statistics endpoint shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointStats {
    /// How many checkpoints of each outcome.
    pub counts: CheckpointCounts,
    /// Over all completed checkpoints.
    pub summary: CheckpointSummary,
    /// The latest of each kind.
    pub latest: LatestCheckpoints,
    /// The newest checkpoints, newest first, at most [`HISTORY`].
    pub history: VecDeque<CheckpointRecord>,
}

/// Checkpoint counts since the job was submitted (over all its attempts).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointCounts {
    /// Restores from a checkpoint (a resumed start or an automatic restart).
    pub restored: u64,
    /// Checkpoints triggered.
    pub total: u64,
    /// Triggered, not yet completed or failed.
    pub in_progress: u64,
    /// Completed.
    pub completed: u64,
    /// Failed, expired or subsumed.
    pub failed: u64,
}

/// Minimum, maximum and average of one figure over completed checkpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MinMaxAvg {
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub avg: f64,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    count: u64,
}

impl MinMaxAvg {
    fn add(&mut self, value: f64) {
        self.min = if self.count == 0 { value } else { self.min.min(value) };
        self.max = self.max.max(value);
        self.sum += value;
        self.count += 1;
        self.avg = self.sum / self.count as f64;
    }
}

/// Figures over completed checkpoints.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointSummary {
    /// Bytes of state each holds (Flink's "full checkpoint data size").
    pub state_size: MinMaxAvg,
    /// Bytes each uploaded (Flink's "checkpointed data size").
    pub checkpointed_size: MinMaxAvg,
    /// Trigger to completion, in milliseconds.
    pub end_to_end_duration_ms: MinMaxAvg,
    /// Longest barrier alignment, in milliseconds.
    pub alignment_duration_ms: MinMaxAvg,
}

/// The latest checkpoint of each outcome.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LatestCheckpoints {
    /// The latest completed checkpoint.
    pub completed: Option<CheckpointRecord>,
    /// The latest failed checkpoint, with its cause.
    pub failed: Option<CheckpointRecord>,
    /// The checkpoint the current attempt started from.
    pub restored: Option<RestoredCheckpoint>,
}

/// A checkpoint the job was restored from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestoredCheckpoint {
    /// Its id.
    pub id: u64,
    /// When the restore started, in milliseconds since the Unix epoch.
    pub restore_timestamp: u64,
    /// Where it is stored.
    pub external_path: String,
    /// Whether it is a savepoint (Flink's `is_savepoint`).
    pub is_savepoint: bool,
}

/// Where a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointStatus {
    /// Waiting for acknowledgements.
    InProgress,
    /// Stored, with its `_metadata`.
    Completed,
    /// Abandoned; `failure-message` says why.
    Failed,
}

/// One checkpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointRecord {
    /// Its id.
    pub id: u64,
    /// In progress, completed or failed.
    pub status: CheckpointStatus,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub trigger_timestamp: u64,
    /// When the last acknowledgement arrived.
    pub latest_ack_timestamp: Option<u64>,
    /// Trigger to completion (or failure), in milliseconds.
    pub end_to_end_duration_ms: f64,
    /// Bytes of state it holds, shared files included (Flink's "full checkpoint data size").
    pub state_size: u64,
    /// Bytes it uploaded: less than `state-size` for an incremental checkpoint, which references
    /// the files earlier ones stored (Flink's "checkpointed data size").
    pub checkpointed_size: u64,
    /// Longest barrier alignment of any subtask, in milliseconds.
    pub alignment_duration_ms: f64,
    /// Subtasks that acknowledge a checkpoint: sources, operators and sinks.
    pub num_subtasks: u64,
    /// Those that have.
    pub num_acknowledged_subtasks: u64,
    /// Why it failed.
    pub failure_message: Option<String>,
    /// Per source, operator and sink uid.
    pub tasks: BTreeMap<String, TaskCheckpointStats>,
}

/// One vertex's part of a checkpoint; durations are the longest of its subtasks.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TaskCheckpointStats {
    /// Its subtasks that acknowledged.
    pub num_acknowledged_subtasks: u64,
    /// Bytes of state it holds.
    pub state_size: u64,
    /// Bytes it uploaded.
    pub checkpointed_size: u64,
    /// Barrier alignment, in milliseconds.
    pub alignment_duration_ms: f64,
    /// The synchronous part (copying state and pre-committing), in milliseconds.
    pub sync_duration_ms: f64,
    /// The asynchronous part (storing the snapshot), in milliseconds.
    pub async_duration_ms: f64,
    /// Each subtask that acknowledged, in the order they did (Flink's per-subtask details).
    pub subtasks: Vec<SubtaskAckStats>,
}

/// One subtask's acknowledgement of a checkpoint.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubtaskAckStats {
    /// Its index, from 0.
    pub index: u32,
    /// When it acknowledged, in milliseconds since the Unix epoch.
    pub ack_timestamp: u64,
    /// Bytes of state it holds.
    pub state_size: u64,
    /// Bytes it uploaded.
    pub checkpointed_size: u64,
    /// Its barrier alignment, in milliseconds.
    pub alignment_duration_ms: f64,
    /// Its synchronous part, in milliseconds.
    pub sync_duration_ms: f64,
    /// Its asynchronous part, in milliseconds.
    pub async_duration_ms: f64,
}

/// What one subtask reports for a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct SubtaskCheckpoint {
    /// Bytes of state held.
    pub state_size: u64,
    /// Bytes uploaded.
    pub checkpointed_size: u64,
    /// Barrier alignment.
    pub alignment: Duration,
    /// The synchronous part.
    pub sync: Duration,
    /// The asynchronous part.
    pub upload: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl CheckpointStats {
    fn record(&mut self, id: u64) -> Option<&mut CheckpointRecord> {
        self.history.iter_mut().find(|r| r.id == id)
    }

    /// Checkpoint `id` was triggered; `subtasks` will acknowledge it.
    pub fn triggered(&mut self, id: u64, now: u64, subtasks: u64) {
        self.counts.total += 1;
        self.counts.in_progress += 1;
        self.history.push_front(CheckpointRecord {
            id,
            status: CheckpointStatus::InProgress,
            trigger_timestamp: now,
            latest_ack_timestamp: None,
            end_to_end_duration_ms: 0.0,
            state_size: 0,
            checkpointed_size: 0,
            alignment_duration_ms: 0.0,
            num_subtasks: subtasks,
            num_acknowledged_subtasks: 0,
            failure_message: None,
            tasks: BTreeMap::new(),
        });
        self.history.truncate(HISTORY);
    }

    /// Subtask `index` of vertex `uid` acknowledged checkpoint `id`.
    pub fn acknowledged(&mut self, id: u64, (uid, index): (&str, u32), now: u64, subtask: &SubtaskCheckpoint) {
        let Some(record) = self.record(id) else { return };
        record.latest_ack_timestamp = Some(now);
        record.num_acknowledged_subtasks += 1;
        record.state_size += subtask.state_size;
        record.checkpointed_size += subtask.checkpointed_size;
        record.alignment_duration_ms = record.alignment_duration_ms.max(ms(subtask.alignment));
        let task = record.tasks.entry(uid.to_string()).or_default();
        task.num_acknowledged_subtasks += 1;
        task.state_size += subtask.state_size;
        task.checkpointed_size += subtask.checkpointed_size;
        task.alignment_duration_ms = task.alignment_duration_ms.max(ms(subtask.alignment));
        task.sync_duration_ms = task.sync_duration_ms.max(ms(subtask.sync));
        task.async_duration_ms = task.async_duration_ms.max(ms(subtask.upload));
        task.subtasks.push(SubtaskAckStats {
            index,
            ack_timestamp: now,
            state_size: subtask.state_size,
            checkpointed_size: subtask.checkpointed_size,
            alignment_duration_ms: ms(subtask.alignment),
            sync_duration_ms: ms(subtask.sync),
            async_duration_ms: ms(subtask.upload),
        });
    }

    /// Checkpoint `id` completed after `duration`.
    pub fn completed(&mut self, id: u64, duration: Duration) {
        self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        self.counts.completed += 1;
        let Some(record) = self.record(id) else { return };
        record.status = CheckpointStatus::Completed;
        record.end_to_end_duration_ms = ms(duration);
        let record = record.clone();
        self.summary.state_size.add(record.state_size as f64);
        self.summary.checkpointed_size.add(record.checkpointed_size as f64);
        self.summary.end_to_end_duration_ms.add(record.end_to_end_duration_ms);
        self.summary.alignment_duration_ms.add(record.alignment_duration_ms);
        self.latest.completed = Some(record);
    }

    /// Checkpoint `id` failed after `duration`.
    pub fn failed(&mut self, id: u64, duration: Duration, cause: &str) {
        self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        self.counts.failed += 1;
        let Some(record) = self.record(id) else { return };
        record.status = CheckpointStatus::Failed;
        record.end_to_end_duration_ms = ms(duration);
        record.failure_message = Some(cause.to_string());
        self.latest.failed = Some(record.clone());
    }

    /// The job (re)started from a checkpoint.
    pub fn restored(&mut self, restored: RestoredCheckpoint) {
        self.counts.restored += 1;
        self.latest.restored = Some(restored);
    }

    /// Checkpoints up to `last_id` still in progress when their attempt ended will never complete
    /// (later ones belong to the next run, which may already have started).
    pub fn attempt_ended(&mut self, last_id: u64) {
        let ended = |r: &&mut CheckpointRecord| r.status == CheckpointStatus::InProgress && r.id <= last_id;
        for record in self.history.iter_mut().filter(ended) {
            record.status = CheckpointStatus::Failed;
            record.failure_message = Some("the job attempt ended before it completed".to_string());
            self.counts.failed += 1;
            self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_summary_and_history() {
        let mut stats = CheckpointStats::default();
        for id in 1..=12 {
            stats.triggered(id, 1000 * id, 3);
            let ack = SubtaskCheckpoint { state_size: 100 * id, sync: Duration::from_millis(id), ..Default::default() };
            stats.acknowledged(id, ("count", 0), 1000 * id + 5, &ack);
            if id == 4 {
                stats.failed(id, Duration::from_millis(9), "storage down");
            } else {
                stats.completed(id, Duration::from_millis(2 * id));
            }
        }
        stats.triggered(13, 13_000, 3);
        assert_eq!(stats.counts.total, 13);
        assert_eq!(stats.counts.completed, 11);
        assert_eq!(stats.counts.failed, 1);
        assert_eq!(stats.counts.in_progress, 1);
        assert_eq!(stats.history.len(), HISTORY);
        assert_eq!(stats.history[0].id, 13);
        let latest = stats.latest.completed.as_ref().unwrap();
        assert_eq!((latest.id, latest.state_size, latest.end_to_end_duration_ms), (12, 1200, 24.0));
        assert_eq!(latest.tasks["count"].sync_duration_ms, 12.0);
        assert_eq!(stats.latest.failed.as_ref().unwrap().failure_message.as_deref(), Some("storage down"));
        assert_eq!((stats.summary.state_size.min, stats.summary.state_size.max), (100.0, 1200.0));
        stats.attempt_ended(13);
        assert_eq!((stats.counts.in_progress, stats.counts.failed), (0, 2));
    }
}
