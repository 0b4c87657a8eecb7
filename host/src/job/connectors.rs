//! The sources and sinks of a job file, opened as factories: each table's `type` checked with
//! the settings that go with it. A new connector is an arm here and its factory in
//! `crate::connectors`; neither the graph builder nor the executor changes.
use std::path::Path;

use super::spec::{PostgresModeSpec, SinkSpec, SinkType, SourceSpec, SourceType};
use crate::checkpoint::Restore;
use crate::connectors::{
    BlackholeSinkFactory, FileCommit, FileSinkFactory, FileSourceFactory, GeneratorSourceFactory, PostgresMode,
    PostgresSinkConfig, PostgresSinkFactory, Restored, StdoutSinkFactory,
};
use crate::runtime::{SinkFactory, SourceFactory};

/// Source `s`'s factory and parallelism (`default_parallelism` unless it sets its own); relative
/// paths start at `base`.
pub(super) fn source(
    s: &SourceSpec,
    base: &Path,
    default_parallelism: u32,
) -> Result<(Box<dyn SourceFactory>, u32), String> {
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
            if s.parallelism.is_some_and(|p| p != 1) {
                return Err(format!(
                    "source '{}': a file source reads its file in one subtask; remove `parallelism`",
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
            (Box::new(FileSourceFactory::new(path, s.rate)), 1)
        }
        SourceType::Generator => {
            if s.path.is_some() {
                return Err(format!("source '{}': `path` is a setting of file sources, not generator sources", s.uid));
            }
            if s.keys == Some(0) {
                return Err(format!("source '{}': `keys` must be at least 1", s.uid));
            }
            let parallelism = s.parallelism.unwrap_or(default_parallelism);
            (Box::new(GeneratorSourceFactory::new(s.count, s.keys.unwrap_or(1000), s.rate)), parallelism)
        }
    })
}

/// Sink `s`'s factory; relative paths start at `base`. With `two_phase`, a file sink publishes
/// by two-phase commit and brings its directory to the output of `restore`, the checkpoint or
/// savepoint job `job_id` resumes from.
pub(super) fn sink(
    s: &SinkSpec,
    base: &Path,
    two_phase: bool,
    restore: Option<&Restore>,
    job_id: &str,
) -> Result<Box<dyn SinkFactory>, String> {
    let postgres_only = [
        ("url", s.url.is_some()),
        ("password-env", s.password_env.is_some()),
        ("table", s.table.is_some()),
        ("columns", s.columns.is_some()),
        ("mode", s.mode.is_some()),
        ("key-columns", s.key_columns.is_some()),
    ];
    if let Some((key, _)) = postgres_only.iter().find(|(_, set)| *set).filter(|_| s.kind != SinkType::Postgres) {
        return Err(format!("sink '{}': `{key}` is a setting of postgres sinks only", s.uid));
    }
    Ok(match (s.kind, &s.path) {
        (SinkType::File, Some(path)) => {
            let dir = base.join(path);
            let commit = match two_phase {
                false => FileCommit::Direct,
                true => FileCommit::TwoPhase {
                    restored: restore.map(|r| Restored {
                        job_id: r.job_id().to_string(),
                        id: r.id(),
                        committed: r.sink_committed(&s.uid).cloned(),
                    }),
                },
            };
            let factory = FileSinkFactory::new(dir, commit, job_id);
            Box::new(factory.map_err(|e| format!("sink '{}': {e}", s.uid))?)
        }
        (SinkType::File, None) => return Err(format!("sink '{}': `path` is required for a file sink", s.uid)),
        (SinkType::Stdout, None) => Box::new(StdoutSinkFactory),
        (SinkType::Blackhole, None) => Box::new(BlackholeSinkFactory),
        (SinkType::Postgres, None) => postgres_sink(s, two_phase, restore, job_id)?,
        (_, Some(_)) => return Err(format!("sink '{}': `path` is a setting of file sinks only", s.uid)),
    })
}

/// A `postgres` sink: exactly-once (two-phase) with checkpointing, resolving what an earlier run
/// of the job left prepared up to the barrier it resumes from.
fn postgres_sink(
    s: &SinkSpec,
    two_phase: bool,
    restore: Option<&Restore>,
    job_id: &str,
) -> Result<Box<dyn SinkFactory>, String> {
    let uid = &s.uid;
    let required = |key: &str, value: &Option<String>| {
        value.clone().ok_or_else(|| format!("sink '{uid}': `{key}` is required for a postgres sink"))
    };
    let url = required("url", &s.url)?;
    if url.parse::<postgres::Config>().is_ok_and(|c| c.get_password().is_some()) {
        return Err(format!(
            "sink '{uid}': `url` holds a password; never put one in a job file: name the environment variable that \
             holds it with `password-env`"
        ));
    }
    let password = match &s.password_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| {
            format!("sink '{uid}': `password-env` names {var}, which is not set in weir's environment")
        })?),
    };
    let table = required("table", &s.table)?;
    let columns: Vec<(String, String)> = s.columns.clone().unwrap_or_default().into_iter().collect();
    if columns.is_empty() {
        return Err(format!(
            "sink '{uid}': `columns` is required: each column and the field of the event's JSON value it takes, \
             such as columns = {{ user_id = \"key\", clicks = \"count\" }}"
        ));
    }
    let mode = match (s.mode.unwrap_or_default(), &s.key_columns) {
        (PostgresModeSpec::Append, None) => PostgresMode::Append,
        (PostgresModeSpec::Append, Some(_)) => {
            return Err(format!("sink '{uid}': `key-columns` is a setting of mode = \"upsert\""));
        }
        (PostgresModeSpec::Upsert, None) => {
            return Err(format!("sink '{uid}': mode = \"upsert\" needs `key-columns` (the table's primary key)"));
        }
        (PostgresModeSpec::Upsert, Some(keys)) => {
            if let Some(key) = keys.iter().find(|k| !columns.iter().any(|(c, _)| c == *k)) {
                return Err(format!("sink '{uid}': key column \"{key}\" is not one of `columns`"));
            }
            PostgresMode::Upsert { key_columns: keys.clone() }
        }
    };
    let config = PostgresSinkConfig { uid: uid.clone(), url, password, table, columns, mode };
    let restored = restore.map(Restore::id);
    Ok(Box::new(PostgresSinkFactory::new(config, two_phase, job_id, restored)?))
}
