//! The sources and sinks of a job file, opened as factories: each table's `type` checked with
//! the settings that go with it. A new connector is an arm here and its factory in
//! `crate::connectors`; neither the graph builder nor the executor changes.
use std::path::Path;

mod kafka;
mod postgres;

use super::spec::{SinkSpec, SinkType, SourceSpec, SourceType};
use crate::checkpoint::Restore;
use crate::connectors::{
    BlackholeSinkFactory, FileCommit, FileSinkFactory, FileSourceFactory, GeneratorSourceFactory, Restored,
    StdoutSinkFactory,
};
use crate::runtime::{SinkFactory, SourceFactory};

/// Source `s`'s factory and parallelism (`default_parallelism` unless it sets its own); relative
/// paths start at `base`.
pub(super) fn source(
    s: &SourceSpec,
    base: &Path,
    default_parallelism: u32,
) -> Result<(Box<dyn SourceFactory>, u32), String> {
    kafka::refuse_kafka_settings(s)?;
    let file_only = [("timestamp-field", s.timestamp_field.is_some()), ("format", s.format.is_some())];
    only_for("source", &s.uid, "file sources", s.kind == SourceType::File, &file_only)?;
    let generator_only = [("event-time-step", s.event_time_step.is_some())];
    only_for("source", &s.uid, "generator sources", s.kind == SourceType::Generator, &generator_only)?;
    Ok(match s.kind {
        SourceType::File => {
            let path =
                s.path.as_deref().ok_or_else(|| format!("source '{}': `path` is required for a file source", s.uid))?;
            if s.count.is_some() || s.keys.is_some() {
                return Err(format!(
                    "source '{}': `count` and `keys` are settings of generator sources, not file sources",
                    s.uid
                ));
            }
            let path = base.join(path);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(m) if m.is_dir() => {
                    return Err(format!("source '{}': {} is a directory; name a file", s.uid, path.display()));
                }
                Ok(_) => {
                    return Err(format!(
                        "source '{}': {} is not a regular file (a device or a pipe); name a file",
                        s.uid,
                        path.display()
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!("source '{}': input file {} does not exist", s.uid, path.display()));
                }
                Err(e) => return Err(format!("source '{}': cannot read {}: {e}", s.uid, path.display())),
            }
            let quarantine = match s.format.as_deref() {
                None | Some("lines") => false,
                Some("quarantine") if s.timestamp_field.is_some() => {
                    return Err(format!(
                        "source '{}': a quarantine record carries its event's timestamp: drop `timestamp-field`",
                        s.uid
                    ));
                }
                Some("quarantine") => true,
                Some(other) => {
                    return Err(format!("source '{}': format \"{other}\" is not \"lines\" or \"quarantine\"", s.uid));
                }
            };
            let factory =
                FileSourceFactory::new(path, s.rate, s.timestamp_field.clone()).reading_quarantine(quarantine);
            // One subtask unless told otherwise: the lines then come in the file's order.
            (Box::new(factory), s.parallelism.unwrap_or(1))
        }
        SourceType::Generator => {
            if s.path.is_some() {
                return Err(format!("source '{}': `path` is a setting of file sources, not generator sources", s.uid));
            }
            if s.keys == Some(0) {
                return Err(format!("source '{}': `keys` must be at least 1", s.uid));
            }
            let parallelism = s.parallelism.unwrap_or(default_parallelism);
            let mut factory = GeneratorSourceFactory::new(s.count, s.keys.unwrap_or(1000), s.rate);
            if let Some(step) = &s.event_time_step {
                let nanos = super::spec::duration(step).map(|d| d.as_nanos() as u64).filter(|&ns| ns > 0);
                let nanos = nanos.ok_or_else(|| {
                    format!(
                        "source '{}': event-time-step \"{step}\" is not a duration such as \"1ms\" or \"1us\"",
                        s.uid
                    )
                })?;
                factory = factory.with_event_time_step(nanos);
            }
            (Box::new(factory), parallelism)
        }
        SourceType::Kafka => (kafka::source(s)?, s.parallelism.unwrap_or(default_parallelism)),
    })
}

/// How a job's sinks keep their output exactly once.
pub(super) struct Exactly<'a> {
    /// The job checkpoints: sinks publish by two-phase commit.
    pub(super) two_phase: bool,
    /// The checkpoint or savepoint the job resumes from: sinks bring their output to what it
    /// records.
    pub(super) restore: Option<&'a Restore>,
    /// The running job's id.
    pub(super) job_id: &'a str,
    /// After an upgrade: how long sinks that cannot take output back hold it back.
    pub(super) hold_output: Option<std::time::Duration>,
}

/// Sink `s`'s factory; relative paths start at `base`. With two-phase commit, a file sink
/// brings its directory to the output of the checkpoint or savepoint the job resumes from.
pub(super) fn sink(s: &SinkSpec, base: &Path, exactly: &Exactly) -> Result<Box<dyn SinkFactory>, String> {
    let Exactly { two_phase, restore, job_id, .. } = *exactly;
    let postgres_only = [
        ("url", s.url.is_some()),
        ("table", s.table.is_some()),
        ("columns", s.columns.is_some()),
        ("mode", s.mode.is_some()),
        ("key-columns", s.key_columns.is_some()),
        ("statement-timeout", s.statement_timeout.is_some()),
    ];
    only_for("sink", &s.uid, "postgres sinks", s.kind == SinkType::Postgres, &postgres_only)?;
    let kafka_only = [
        ("bootstrap-servers", s.bootstrap_servers.is_some()),
        ("topic", s.topic.is_some()),
        ("delivery", s.delivery.is_some()),
        ("properties", s.properties.is_some()),
    ];
    only_for("sink", &s.uid, "kafka sinks", s.kind == SinkType::Kafka, &kafka_only)?;
    let with_password = matches!(s.kind, SinkType::Postgres | SinkType::Kafka);
    only_for("sink", &s.uid, "postgres and kafka sinks", with_password, &[("password-env", s.password_env.is_some())])?;
    Ok(match (s.kind, &s.path) {
        (SinkType::File, Some(path)) => {
            let dir = base.join(path);
            let commit = match two_phase {
                false => FileCommit::Direct,
                true => FileCommit::TwoPhase { restored: restore.map(|r| restored(r, &s.uid)) },
            };
            let factory = FileSinkFactory::new(dir, commit, job_id);
            Box::new(factory.map_err(|e| format!("sink '{}': {e}", s.uid))?)
        }
        (SinkType::File, None) => return Err(format!("sink '{}': `path` is required for a file sink", s.uid)),
        (SinkType::Stdout, None) => Box::new(StdoutSinkFactory),
        (SinkType::Blackhole, None) => Box::new(BlackholeSinkFactory),
        (SinkType::Postgres, None) => postgres::sink(s, exactly)?,
        (SinkType::Kafka, None) => kafka::sink(s)?,
        (_, Some(_)) => return Err(format!("sink '{}': `path` is a setting of file sinks only", s.uid)),
    })
}

/// What sink `uid` resumes from of `restore`: who took it, at which barrier, and what the sink
/// had committed then.
fn restored(restore: &Restore, uid: &str) -> Restored {
    Restored { job_id: restore.job_id().to_string(), id: restore.id(), committed: restore.sink_committed(uid).cloned() }
}

/// Refuses the first of `settings` (its key, whether the table sets it) when the settings belong
/// to `owner` (such as "kafka sinks") and table `uid` (a `kind`) is not one.
fn only_for(kind: &str, uid: &str, owner: &str, applies: bool, settings: &[(&str, bool)]) -> Result<(), String> {
    match settings.iter().find(|(_, set)| *set).filter(|_| !applies) {
        Some((key, _)) => Err(format!("{kind} '{uid}': `{key}` is a setting of {owner} only")),
        None => Ok(()),
    }
}

/// The password in the environment variable that table `uid`'s `password-env` names, if set.
fn password(kind: &str, uid: &str, password_env: &Option<String>) -> Result<Option<String>, String> {
    match password_env {
        None => Ok(None),
        Some(var) => std::env::var(var)
            .map(Some)
            .map_err(|_| format!("{kind} '{uid}': `password-env` names {var}, which is not set in weir's environment")),
    }
}
