//! The `postgres` sink's table of a job file.
use crate::checkpoint::Restore;
use crate::connectors::{DEFAULT_STATEMENT_TIMEOUT, PostgresMode, PostgresSinkConfig, PostgresSinkFactory, TwoPhase};
use crate::job::spec::{PostgresModeSpec, SinkSpec};
use crate::runtime::SinkFactory;

/// A `postgres` sink: exactly-once (two-phase) with checkpointing, resolving what an earlier run
/// of the job left prepared up to the barrier it resumes from.
pub(super) fn sink(s: &SinkSpec, exactly: &super::Exactly) -> Result<Box<dyn SinkFactory>, String> {
    let super::Exactly { two_phase, restore, job_id, hold_output } = *exactly;
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
    let password = super::password("sink", uid, &s.password_env)?;
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
    let statement_timeout = match &s.statement_timeout {
        None => DEFAULT_STATEMENT_TIMEOUT,
        Some(text) => crate::job::spec::duration(text).filter(|d| d.as_millis() >= 1).ok_or_else(|| {
            format!(
                "sink '{uid}': statement-timeout \"{text}\" is not a duration from 1ms to 365 days, such as \"30s\""
            )
        })?,
    };
    let config = PostgresSinkConfig { uid: uid.clone(), url, password, table, columns, mode, statement_timeout };
    let two_phase = two_phase.then(|| TwoPhase {
        job_id: job_id.to_string(),
        restored: restore.map(|r| super::restored(r, uid)),
        fork: restore.is_some_and(Restore::is_fork),
        until_stored: restore.and_then(Restore::storing).map(|savepoint| {
            Box::new(move || savepoint.stored().map(drop)) as Box<dyn FnOnce() -> Result<(), String> + Send>
        }),
        hold_for: hold_output,
    });
    Ok(Box::new(PostgresSinkFactory::new(config, two_phase)?))
}
