//! The `postgres` sink: event values (JSON objects) as rows of a PostgreSQL table, appended or
//! upserted, up to [`BATCH_ROWS`] rows at a time through one prepared statement (`unnest` of one
//! array per column).
//!
//! With checkpointing it is exactly-once by two-phase commit, as Flink's JDBC XA sink: each
//! subtask writes the rows between two barriers in one transaction, `PREPARE TRANSACTION` at
//! barrier n (the pre-commit), and the factory runs `COMMIT PREPARED` once checkpoint n completes.
//! Transaction ids are `weir:<job id>:<sink>:<subtask>:<n>` (`<sink>`: 8 hex digits of the uid's
//! SHA-256), so a job that resumes from barrier n finds its own: those up to n belong to a
//! completed checkpoint and are committed, later ones are rolled back. Without checkpointing each
//! statement commits by itself (at-least-once across failures).
use std::collections::HashMap;
use std::sync::Mutex;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use sha2::Digest;

use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// Rows a subtask buffers before it writes them in one statement.
pub const BATCH_ROWS: usize = 10_000;

/// How rows reach the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresMode {
    /// `INSERT`: one row per event.
    Append,
    /// `INSERT … ON CONFLICT (key columns) DO UPDATE`: one row per key, the latest event's.
    Upsert {
        /// The columns of the table's primary key or unique constraint.
        key_columns: Vec<String>,
    },
}

/// A checked `postgres` sink table.
#[derive(Debug, Clone)]
pub struct PostgresSinkConfig {
    /// The sink's uid, in every message.
    pub uid: String,
    /// The connection URL (`postgres://user@host:port/db`), without a password.
    pub url: String,
    /// The password, from the environment variable the job names.
    pub password: Option<String>,
    /// The table, possibly schema-qualified (`schema.table`).
    pub table: String,
    /// Each column and the field of the event's JSON value it takes.
    pub columns: Vec<(String, String)>,
    /// Append or upsert.
    pub mode: PostgresMode,
}

impl PostgresSinkConfig {
    fn connect(&self) -> Result<Client, String> {
        let mut config: postgres::Config =
            self.url.parse().map_err(|e| format!("sink '{}': url \"{}\" is not valid: {e}", self.uid, self.url))?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
            .connect(NoTls)
            .map_err(|e| format!("sink '{}': cannot connect to PostgreSQL at {}: {e}", self.uid, self.url))
    }

    fn error(&self, doing: &str, e: postgres::Error) -> String {
        format!(
            "sink '{}': {doing} on PostgreSQL at {}: {}",
            self.uid,
            self.url,
            e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
        )
    }
}

/// A quoted SQL identifier (`schema.table` quotes each part).
fn quoted(name: &str) -> String {
    name.split('.').map(|part| format!("\"{}\"", part.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

/// The one statement a subtask writes with: every row of a flush at once, as one text array per
/// column (`unnest`), each value cast from text to its column's type. Prepared once, it is
/// parsed and planned once, whatever the number of rows.
fn insert_statement(config: &PostgresSinkConfig, types: &[String]) -> String {
    let columns: Vec<String> = config.columns.iter().map(|(c, _)| quoted(c)).collect();
    let arrays: Vec<String> = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = types.iter().enumerate().map(|(i, kind)| format!("u.c{i}::{kind}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
        quoted(&config.table),
        columns.join(", "),
        casts.join(", "),
        arrays.join(", "),
        names.join(", ")
    );
    if let PostgresMode::Upsert { key_columns } = &config.mode {
        let keys: Vec<String> = key_columns.iter().map(|k| quoted(k)).collect();
        let updates: Vec<String> = config
            .columns
            .iter()
            .filter(|(c, _)| !key_columns.contains(c))
            .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quoted(c)))
            .collect();
        match updates.is_empty() {
            true => sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))),
            false => sql.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), updates.join(", "))),
        }
    }
    sql
}

/// Creates `postgres` sink subtasks and commits their prepared transactions.
pub struct PostgresSinkFactory {
    config: PostgresSinkConfig,
    /// Each column's type, as the table declares it.
    types: Vec<String>,
    /// With checkpointing: the prefix of the transaction ids of this job's sink.
    two_phase: Option<String>,
    /// The connection commits go through: the one the table was checked with, opened again
    /// after it broke.
    committer: Mutex<Option<Client>>,
}

impl PostgresSinkFactory {
    /// Checks the server and the table; with `two_phase` (checkpointing), the server must allow
    /// prepared transactions, and those a run of job `job_id` left are resolved: committed up to
    /// barrier `restored` (the checkpoint or savepoint the job resumes from), rolled back after.
    pub fn new(
        config: PostgresSinkConfig,
        two_phase: bool,
        job_id: &str,
        restored: Option<u64>,
    ) -> Result<Self, String> {
        let mut client = config.connect()?;
        let uid = &config.uid;
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&quoted(&config.table)],
            )
            .map_err(|e| config.error(&format!("reading table \"{}\"", config.table), e))?;
        let declared: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut types = Vec::new();
        for (column, _) in &config.columns {
            let kind = declared.get(column).ok_or_else(|| {
                format!("sink '{uid}': table \"{}\" has no column \"{column}\" (it has: {})", config.table, {
                    let mut names: Vec<&str> = declared.keys().map(String::as_str).collect();
                    names.sort();
                    names.join(", ")
                })
            })?;
            types.push(kind.clone());
        }
        let two_phase = match two_phase {
            false => None,
            true => {
                let allowed: String = client
                    .query_one("SHOW max_prepared_transactions", &[])
                    .map_err(|e| config.error("reading max_prepared_transactions", e))?
                    .get(0);
                if allowed.trim() == "0" {
                    return Err(format!(
                        "sink '{uid}': PostgreSQL at {} has max_prepared_transactions = 0, and exactly-once output \
                         needs prepared transactions: set max_prepared_transactions (at least the sink's parallelism \
                         times max-concurrent checkpoints, plus one) in postgresql.conf and restart the server, or run \
                         the job without [checkpointing] (at-least-once)",
                        config.url
                    ));
                }
                let sink = hex::encode(&sha2::Sha256::digest(uid.as_bytes())[..4]);
                let prefix = format!("weir:{job_id}:{sink}:");
                resolve_prepared(&mut client, &config, &prefix, restored)?;
                Some(prefix)
            }
        };
        Ok(PostgresSinkFactory { config, types, two_phase, committer: Mutex::new(Some(client)) })
    }
}

/// Commits this sink's prepared transactions of barriers up to `restored` and rolls back the
/// rest (of a run that was killed, or of barriers after the one the job resumes from).
fn resolve_prepared(
    client: &mut Client,
    config: &PostgresSinkConfig,
    prefix: &str,
    restored: Option<u64>,
) -> Result<(), String> {
    let rows = client
        .query("SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)", &[&prefix])
        .map_err(|e| config.error("listing prepared transactions", e))?;
    for row in rows {
        let gid: String = row.get(0);
        let barrier = gid.rsplit(':').next().and_then(|n| n.parse::<u64>().ok());
        let verb = match (barrier, restored) {
            (Some(n), Some(r)) if n <= r => "COMMIT",
            _ => "ROLLBACK",
        };
        tracing::info!("sink '{}': {verb} PREPARED '{gid}', left by an earlier run", config.uid);
        client
            .batch_execute(&format!("{verb} PREPARED '{gid}'"))
            .map_err(|e| config.error(&format!("resolving prepared transaction {gid}"), e))?;
    }
    Ok(())
}

impl SinkFactory for PostgresSinkFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let mut client = self.config.connect()?;
        let gid_prefix = self.two_phase.as_ref().map(|p| format!("{p}{}:", info.index));
        let sql = insert_statement(&self.config, &self.types);
        let insert = client
            .prepare(&sql)
            .map_err(|e| self.config.error(&format!("preparing the insert into table \"{}\"", self.config.table), e))?;
        let keys = match &self.config.mode {
            PostgresMode::Append => Vec::new(),
            PostgresMode::Upsert { key_columns } => {
                let columns = self.config.columns.iter().enumerate();
                columns.filter(|(_, (c, _))| key_columns.contains(c)).map(|(i, _)| i).collect()
            }
        };
        Ok(Box::new(PostgresSink {
            config: self.config.clone(),
            keys,
            insert,
            client,
            gid_prefix,
            rows: Vec::new(),
            in_transaction: false,
        }))
    }

    fn commit(&self, _id: u64, committables: Vec<serde_json::Value>) -> Result<(), String> {
        let mut committer = self.committer.lock().map_err(|_| "the sink's committer is poisoned".to_string())?;
        if committer.is_none() {
            *committer = Some(self.config.connect()?);
        }
        let Some(client) = committer.as_mut() else { return Ok(()) };
        for gid in committables.iter().filter_map(serde_json::Value::as_str) {
            match client.batch_execute(&format!("COMMIT PREPARED '{gid}'")) {
                Ok(()) => {}
                // Committed already: a restore commits again what a completed checkpoint holds.
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {}
                Err(e) => {
                    // A broken connection is opened again on the next commit.
                    *committer = None;
                    return Err(self.config.error(&format!("committing transaction {gid}"), e));
                }
            }
        }
        Ok(())
    }
}

/// One subtask's connection and the rows it has not written yet.
struct PostgresSink {
    config: PostgresSinkConfig,
    /// Upsert: the positions of the key columns in a row (none to append).
    keys: Vec<usize>,
    /// [`insert_statement`], prepared.
    insert: postgres::Statement,
    client: Client,
    /// With checkpointing: `weir:<job>:<sink>:<subtask>:`, to which the barrier id is appended.
    gid_prefix: Option<String>,
    /// Each row's values as text (`None`: NULL).
    rows: Vec<Vec<Option<String>>>,
    /// A transaction is open (two-phase only).
    in_transaction: bool,
}

/// A JSON value as the text PostgreSQL casts to the column's type.
fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl PostgresSink {
    /// Writes the buffered rows with one execution of the prepared statement; an upsert writes
    /// each key's last row only.
    fn flush(&mut self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.gid_prefix.is_some() && !self.in_transaction {
            self.client.batch_execute("BEGIN").map_err(|e| self.config.error("starting a transaction", e))?;
            self.in_transaction = true;
        }
        let mut rows = std::mem::take(&mut self.rows);
        if !self.keys.is_empty() {
            let mut last = HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                last.insert(self.keys.iter().map(|&k| row[k].clone()).collect::<Vec<_>>(), i);
            }
            let mut keep: Vec<usize> = last.into_values().collect();
            keep.sort_unstable();
            rows = keep.into_iter().map(|i| std::mem::take(&mut rows[i])).collect();
        }
        // One array per column.
        let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); self.config.columns.len()];
        for row in rows {
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.client
            .execute(&self.insert, &params)
            .map_err(|e| self.config.error(&format!("writing to table \"{}\"", self.config.table), e))?;
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn write(&mut self, batch: &EventBatch) -> Result<(), String> {
        for event in batch.iter() {
            let value: serde_json::Value = serde_json::from_slice(event.value).map_err(|e| {
                let shown = String::from_utf8_lossy(&event.value[..event.value.len().min(80)]).into_owned();
                format!("sink '{}': an event value is not a JSON object ({e}): {shown}", self.config.uid)
            })?;
            let object = value
                .as_object()
                .ok_or_else(|| format!("sink '{}': an event value is not a JSON object: {value}", self.config.uid))?;
            let row: Vec<Option<String>> =
                self.config.columns.iter().map(|(_, field)| object.get(field).and_then(as_text)).collect();
            if let Some(&k) = self.keys.iter().find(|&&k| row[k].is_none()) {
                let (column, field) = &self.config.columns[k];
                return Err(format!(
                    "sink '{}': an event value has no field \"{field}\" for key column \"{column}\": {value}",
                    self.config.uid
                ));
            }
            self.rows.push(row);
            if self.rows.len() >= BATCH_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, id: u64) -> Result<Option<serde_json::Value>, String> {
        self.flush()?;
        let Some(prefix) = &self.gid_prefix else { return Ok(None) };
        if !self.in_transaction {
            return Ok(None);
        }
        let gid = format!("{prefix}{id}");
        self.client
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .map_err(|e| self.config.error(&format!("preparing transaction {gid}"), e))?;
        self.in_transaction = false;
        Ok(Some(serde_json::Value::String(gid)))
    }

    fn finish(&mut self) -> Result<(), String> {
        // With checkpointing the final barrier has prepared everything; without, rows go now.
        self.flush()
    }
}
