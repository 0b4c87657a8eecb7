//! `GET /metrics`: the jobs' metrics in Prometheus's text exposition format (OpenMetrics), read
//! at each scrape from what the REST API shows (no second source of truth), under Flink's metric
//! names where Flink has one (`numRecordsIn`, `numberOfCompletedCheckpoints`,
//! `lastCheckpointDuration`, …), labelled by job, operator uid and subtask. It follows the API's
//! token rule.
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ApiState;
use crate::control::{HistoryEvent, JobInfo, JobState};
use crate::runtime::VertexKind;
use crate::runtime::checkpoint_stats::CheckpointStats;
use crate::runtime::key_ranges::VersionRole;
use crate::runtime::now_ms;

/// The text a scrape gets.
pub(super) fn render(state: &ApiState) -> Result<String, std::fmt::Error> {
    let jobs: Vec<(JobInfo, CheckpointStats)> = state
        .jobs
        .list()
        .into_iter()
        .map(|info| {
            let stats = state.jobs.checkpoints(&info.id).unwrap_or_default();
            (info, stats)
        })
        .collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Jobs(Arc::new(jobs))));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Each partition a Kafka source's status lists with a known lag: topic, partition, lag.
fn partition_lags(status: Option<&serde_json::Value>) -> Vec<(String, i64, i64)> {
    let partitions = status.and_then(|s| s["partitions"].as_array()).into_iter().flatten();
    partitions
        .filter_map(|p| Some((p["topic"].as_str()?.to_string(), p["partition"].as_i64()?, p["lag"].as_i64()?)))
        .collect()
}

/// Every job's metrics, as read for one scrape.
#[derive(Debug)]
struct Jobs(Arc<Vec<(JobInfo, CheckpointStats)>>);

type Labels = Vec<(&'static str, Label)>;

/// A label value, escaped as the exposition format requires (`\\`, `\"`, `\n`): job names, uids
/// and topics are the user's, and prometheus-client writes label values as they are, so a `"` in
/// one would forge a series and make parsers reject the whole scrape.
#[derive(Clone, Debug)]
struct Label(String);

impl From<String> for Label {
    fn from(value: String) -> Self {
        Label(value)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One metric family: its name, help, and a value per label set.
struct Family<T> {
    name: &'static str,
    help: &'static str,
    rows: Vec<(Labels, T)>,
}

impl<T> Family<T> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family { name, help, rows: Vec::new() }
    }
}

/// Writes one metric family: its descriptor, then a sample per label set.
fn write<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    family: Family<M>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(family.name, family.help, None, M::TYPE)?;
    for (labels, value) in &family.rows {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Jobs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut running = Family::new("weir_job_running", "1 while the job runs (or restarts, or upgrades), else 0");
        let mut uptime = Family::new("weir_job_uptime", "Milliseconds since the job started (Flink's uptime)");
        let mut restarts = Family::new("weir_job_numRestarts", "Restarts after failures (Flink's numRestarts)");
        let mut completed =
            Family::new("weir_job_numberOfCompletedCheckpoints", "Completed checkpoints (Flink's name)");
        let mut failed = Family::new("weir_job_numberOfFailedCheckpoints", "Failed checkpoints (Flink's name)");
        let mut duration = Family::new(
            "weir_job_lastCheckpointDuration",
            "End-to-end duration of the latest completed checkpoint, ms",
        );
        let mut size =
            Family::new("weir_job_lastCheckpointSize", "State size of the latest completed checkpoint, bytes");
        let mut upgrades = Family::new("weir_job_numUpgrades", "Operator upgrades (swaps) the job went through");
        let mut traps = Family::new("weir_job_numGuestTraps", "Failures in which a Wasm operator trapped");
        let mut records_in = Family::new("weir_task_numRecordsIn", "Events a subtask received (Flink's numRecordsIn)");
        let mut records_out =
            Family::new("weir_task_numRecordsOut", "Events a subtask emitted (Flink's numRecordsOut)");
        let mut late = Family::new(
            "weir_task_numLateRecordsDropped",
            "Events that came at or before the subtask's watermark (Flink's numLateRecordsDropped; the operator decides)",
        );
        let mut quarantined = Family::new(
            "weir_task_numRecordsQuarantined",
            "Events an operator subtask set aside on its `quarantine` side output (`on-error = \"quarantine\"`)",
        );
        let mut watermark = Family::new(
            "weir_task_currentInputWatermark",
            "The subtask's watermark, ms (Flink's currentInputWatermark)",
        );
        let mut pause = Family::new(
            "weir_job_lastUpgradePause",
            "From the old modules' last batch to the new ones' first in the latest upgrade, ms",
        );
        let mut state_size = Family::new(
            "weir_operator_stateSize",
            "Bytes of state an operator held at the latest completed checkpoint (all its subtasks)",
        );
        let mut backpressured = Family::new(
            "weir_task_backPressuredTimeMs",
            "Milliseconds the subtask waited for room downstream; its rate is Flink's backPressuredTimeMsPerSecond",
        );
        let mut busy = Family::new(
            "weir_task_busyTimeMs",
            "Milliseconds the subtask spent in its operator's calls (a Wasm operator's guest calls); its rate is Flink's busyTimeMsPerSecond",
        );
        let mut lag = Family::new(
            "weir_source_pendingRecords",
            "Kafka sources: records in the partition after the source's position (Flink's pendingRecords)",
        );
        let mut shadow_lines = Family::new(
            "weir_shadow_lines",
            "Output lines of a shadow run compared with the live operator's, by result: equal, differing, missing (the shadow wrote none), extra",
        );
        let mut shadow_memory = Family::new(
            "weir_shadow_memoryBytes",
            "Bytes of memory a shadow run costs now, about (stops at its limit)",
        );
        let mut version_in = Family::new(
            "weir_operator_version_numRecordsIn",
            "Operators running a canary: events each module version processed (role stable or canary)",
        );
        let mut version_out = Family::new(
            "weir_operator_version_numRecordsOut",
            "Operators running a canary: events each module version emitted; its rate is the version's output rate",
        );
        let mut version_busy = Family::new(
            "weir_operator_version_busyTimeMs",
            "Operators running a canary: milliseconds spent in each module version's calls",
        );
        let mut version_errors = Family::new(
            "weir_operator_version_numErrors",
            "Operators running a canary: failed calls of each module version (each failed the job's run)",
        );
        let now = now_ms();
        for (info, stats) in self.0.iter() {
            let job: Labels = vec![("job_id", info.id.clone().into()), ("job_name", info.name.clone().into())];
            let live = matches!(info.state, JobState::Running | JobState::Restarting | JobState::Upgrading);
            running.rows.push((job.clone(), ConstGauge::new(if live { 1.0 } else { 0.0 })));
            let end = info.ended_at.unwrap_or(now);
            uptime.rows.push((job.clone(), ConstGauge::new(end.saturating_sub(info.submitted_at) as f64)));
            restarts.rows.push((job.clone(), ConstCounter::new(u64::from(info.attempt))));
            completed.rows.push((job.clone(), ConstCounter::new(stats.counts.completed)));
            failed.rows.push((job.clone(), ConstCounter::new(stats.counts.failed)));
            if let Some(latest) = &stats.latest.completed {
                duration.rows.push((job.clone(), ConstGauge::new(latest.end_to_end_duration_ms)));
                size.rows.push((job.clone(), ConstGauge::new(latest.state_size as f64)));
            }
            let swaps = info.history.iter().filter(|h| matches!(h.event, HistoryEvent::Upgraded)).count() as u64;
            upgrades.rows.push((job.clone(), ConstCounter::new(swaps)));
            traps.rows.push((job.clone(), ConstCounter::new(info.guest_traps)));
            if let Some(ms) = info.history.iter().rev().find_map(|h| h.pause_ms) {
                pause.rows.push((job.clone(), ConstGauge::new(ms)));
            }
            for shadow in &info.shadows {
                let labels = [job.clone(), vec![("operator", shadow.uid.clone().into())]].concat();
                let results = [
                    ("equal", shadow.equal),
                    ("differing", shadow.differing),
                    ("missing", shadow.missing),
                    ("extra", shadow.extra),
                ];
                for (result, lines) in results {
                    let labels = [labels.clone(), vec![("result", result.to_string().into())]].concat();
                    shadow_lines.rows.push((labels, ConstCounter::new(lines)));
                }
                shadow_memory.rows.push((labels, ConstGauge::new(shadow.memory_bytes as f64)));
            }
            for (uid, task) in stats.latest.completed.iter().flat_map(|c| &c.tasks) {
                let labels = [job.clone(), vec![("operator", uid.clone().into())]].concat();
                state_size.rows.push((labels, ConstGauge::new(task.state_size as f64)));
            }
            for vertex in &info.vertices {
                for version in &vertex.versions {
                    let labels = [
                        job.clone(),
                        vec![
                            ("operator", vertex.uid.clone().into()),
                            (
                                "role",
                                if version.role == VersionRole::Canary { "canary" } else { "stable" }
                                    .to_string()
                                    .into(),
                            ),
                            ("module", version.module.clone().into()),
                        ],
                    ]
                    .concat();
                    version_in.rows.push((labels.clone(), ConstCounter::new(version.events_in)));
                    version_out.rows.push((labels.clone(), ConstCounter::new(version.events_out)));
                    version_busy.rows.push((labels.clone(), ConstCounter::new(version.busy_ms)));
                    version_errors.rows.push((labels, ConstCounter::new(version.errors)));
                }
                for (subtask, counts) in vertex.subtasks.iter().enumerate() {
                    let mut labels = job.clone();
                    labels.push(("operator", vertex.uid.clone().into()));
                    labels.push(("kind", vertex.kind.to_string().into()));
                    labels.push(("subtask", subtask.to_string().into()));
                    records_in.rows.push((labels.clone(), ConstCounter::new(counts.events_in)));
                    records_out.rows.push((labels.clone(), ConstCounter::new(counts.events_out)));
                    late.rows.push((labels.clone(), ConstCounter::new(counts.late_events)));
                    backpressured.rows.push((labels.clone(), ConstCounter::new(counts.backpressured_ms)));
                    if vertex.kind == VertexKind::Operator {
                        busy.rows.push((labels.clone(), ConstCounter::new(counts.busy_ms)));
                        quarantined.rows.push((labels.clone(), ConstCounter::new(counts.quarantined)));
                    }
                    for (topic, partition, records) in partition_lags(counts.status.as_ref()) {
                        let partition = [("topic", topic.into()), ("partition", partition.to_string().into())];
                        lag.rows.push(([labels.clone(), partition.to_vec()].concat(), ConstGauge::new(records as f64)));
                    }
                    if let Some(w) = counts.watermark {
                        watermark.rows.push((labels, ConstGauge::new(w as f64)));
                    }
                }
            }
        }
        for family in [running, uptime, duration, size, pause, state_size, watermark, lag, shadow_memory] {
            write(&mut encoder, family)?;
        }
        let counters = [
            restarts,
            completed,
            failed,
            upgrades,
            traps,
            records_in,
            records_out,
            late,
            quarantined,
            backpressured,
            busy,
            shadow_lines,
            version_in,
            version_out,
            version_busy,
            version_errors,
        ];
        for family in counters {
            write(&mut encoder, family)?;
        }
        Ok(())
    }
}
