//! The `postgres` sink: event values (JSON objects) as rows of a PostgreSQL table, appended or
//! upserted, up to [`BATCH_ROWS`] rows at a time through one prepared statement (`unnest` of one
//! array per column).
//!
//! With checkpointing it is exactly-once by two-phase commit, as Flink's JDBC XA sink: each
//! subtask writes the rows between two barriers in one transaction, `PREPARE TRANSACTION` at
//! barrier n (the pre-commit), and the factory runs `COMMIT PREPARED` once checkpoint n completes.
//! Transaction ids are `weir:<job id>:<sink>:<subtask>:<n>` (`<sink>`: 8 hex digits of the uid's
//! SHA-256).
//!
//! Every checkpoint and savepoint records what the sink had committed at its barrier: per job of
//! its lineage, the highest barrier covered (`{"jobs": {"<job id>": n}}`), as the file sink
//! records its runs. A run that starts from one (a restart, a resume, a restore from a savepoint
//! under a new job id, a rollback) commits the prepared transactions that record covers and rolls
//! back the others of its lineage (the job itself and the job the snapshot was taken of), so that
//! the table holds exactly that snapshot's output. A fork leaves the transactions of the job it
//! was taken of alone: that job may still run and commit them. A run going on in place from an
//! upgrade's stop commits what the stop covers only once the stop's savepoint is stored (until
//! then a resume would go back to an older checkpoint, and write those rows again).
//!
//! Statements run under `statement-timeout` (also a lock timeout): a sink that cannot make
//! progress fails the job with the server's words and the transactions that may hold its rows,
//! and a canceled job sends PostgreSQL a cancel request for a statement still running. Without
//! checkpointing each statement commits by itself (at-least-once across failures).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use sha2::Digest;

use super::Restored;
use crate::runtime::{EventBatch, HELD_OUTPUT, Interrupt, Sink, SinkFactory, SubtaskInfo};

/// Rows a subtask buffers before it writes them in one statement.
pub const BATCH_ROWS: usize = 10_000;

/// How long one statement may run or wait for a lock unless the sink says otherwise.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The longest one statement may run or wait for a lock.
    pub statement_timeout: Duration,
}

/// Exactly-once output: whose transactions are the sink's to resolve, and from what.
pub struct TwoPhase {
    /// The running job's id.
    pub job_id: String,
    /// The checkpoint or savepoint the job starts from, if any.
    pub restored: Option<Restored>,
    /// The job is a fork of the one `restored` was taken of: that job's transactions are not ours.
    pub fork: bool,
    /// For a job going on in place from an upgrade's stop: waits until the stop's savepoint is
    /// stored (an error when it will not be).
    pub until_stored: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
    /// The run after an upgrade: for how long its output is held back (the rollback window), so
    /// that a rollback finds none of it committed.
    pub hold_for: Option<Duration>,
}

/// Output held back for a while after an upgrade: until then each subtask writes into one open
/// transaction across barriers (prepared transactions would hold their row locks against the
/// next ones), and checkpoints record that they hold output back, so that none is resumed from.
struct Hold {
    until: Instant,
    /// Per barrier, whether it held output back: decided by the first subtask to reach it, so
    /// that all subtasks agree.
    decided: Mutex<BTreeMap<u64, bool>>,
}

impl Hold {
    /// Whether barrier `id` holds output back (at a savepoint's or the final barrier, never).
    fn holds(&self, id: u64, lasting: bool) -> bool {
        *lock(&self.decided).entry(id).or_insert_with(|| !lasting && Instant::now() < self.until)
    }

    /// Whether barrier `id` held output back, forgetting the barriers before it.
    fn held(&self, id: u64) -> bool {
        let mut decided = lock(&self.decided);
        *decided = decided.split_off(&id);
        decided.get(&id).copied().unwrap_or(false)
    }
}

/// Per job id, the highest barrier whose output the sink has committed.
type Covered = BTreeMap<String, u64>;

impl PostgresSinkConfig {
    fn connect(&self) -> Result<Client, String> {
        let mut config: postgres::Config =
            self.url.parse().map_err(|e| format!("sink '{}': url \"{}\" is not valid: {e}", self.uid, self.url))?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        let ms = self.statement_timeout.as_millis();
        config.options(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"));
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

    /// [`PostgresSinkConfig::error`], and for a statement that timed out or waited too long for
    /// a lock, who may be in its way: prepared transactions (of a job that is gone, or of another
    /// weir) and sessions holding locks, with what to do.
    fn blocked_error(&self, client: &mut Client, doing: &str, e: postgres::Error) -> String {
        let timed_out = [SqlState::LOCK_NOT_AVAILABLE, SqlState::QUERY_CANCELED].iter().any(|c| e.code() == Some(c));
        let message = self.error(doing, e);
        if !timed_out {
            return message;
        }
        let limit = humantime::format_duration(self.statement_timeout);
        // Out of the failed transaction, if in one, to ask the server who is in the way.
        let _ = client.batch_execute("ROLLBACK");
        let mut holders = Vec::new();
        let prepared = client.query(
            "SELECT gid, prepared::text FROM pg_prepared_xacts WHERE database = current_database() ORDER BY prepared",
            &[],
        );
        for row in prepared.into_iter().flatten().take(5) {
            holders.push(format!(
                "prepared transaction '{}' (since {})",
                row.get::<_, String>(0),
                row.get::<_, String>(1)
            ));
        }
        let sessions = client.query(
            "SELECT pid, coalesce(usename::text, ''), state, left(query, 80) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL \
             ORDER BY xact_start LIMIT 5",
            &[],
        );
        for row in sessions.into_iter().flatten() {
            holders.push(format!(
                "session {} of user '{}' ({}): {}",
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, Option<String>>(2).unwrap_or_default(),
                row.get::<_, Option<String>>(3).unwrap_or_default()
            ));
        }
        let holders = match holders.is_empty() {
            true => String::new(),
            false => format!("; transactions that may hold its rows: {}", holders.join(", ")),
        };
        format!(
            "{message} (no progress within statement-timeout = {limit}){holders}. End the transaction in the way \
             (COMMIT PREPARED or ROLLBACK PREPARED '<gid>' for a prepared one, pg_terminate_backend(<pid>) for a \
             session), or raise the sink's statement-timeout"
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
    /// With checkpointing: the exactly-once state.
    two_phase: Option<Exactly>,
    /// The connection commits go through: the one the table was checked with, opened again
    /// after it broke.
    committer: Arc<Mutex<Option<Client>>>,
}

/// What an exactly-once sink keeps.
struct Exactly {
    /// The running job's id.
    job_id: String,
    /// `weir:<job id>:<sink>:`: its subtasks' transaction ids start so.
    prefix: String,
    /// What the snapshot it started from had committed.
    covered: Covered,
    /// Prepared transactions the snapshot it started from covers, to commit once that snapshot
    /// is stored (an upgrade's stop, handed over in place), and those of savepoints taken while
    /// output is held back: committed with the next checkpoint that holds nothing back.
    deferred: Arc<Mutex<Vec<String>>>,
    /// After an upgrade: output held back until its rollback window has passed.
    hold: Option<Arc<Hold>>,
}

impl PostgresSinkFactory {
    /// Checks the server and the table; with `two_phase` (checkpointing), the server must allow
    /// prepared transactions, and those of the sink's lineage are resolved (module docs).
    pub fn new(config: PostgresSinkConfig, two_phase: Option<TwoPhase>) -> Result<Self, String> {
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
        let exactly = match two_phase {
            None => None,
            Some(two_phase) => Some(Exactly::resolve(&config, &mut client, two_phase)?),
        };
        Ok(PostgresSinkFactory { config, types, two_phase: exactly, committer: Arc::new(Mutex::new(Some(client))) })
    }
}

impl Exactly {
    /// Checks that the server allows prepared transactions, then commits those of the sink's
    /// lineage that the snapshot `two_phase` starts from covers (or defers them until it is
    /// stored), and rolls back the others.
    fn resolve(config: &PostgresSinkConfig, client: &mut Client, two_phase: TwoPhase) -> Result<Exactly, String> {
        let allowed: String = client
            .query_one("SHOW max_prepared_transactions", &[])
            .map_err(|e| config.error("reading max_prepared_transactions", e))?
            .get(0);
        if allowed.trim() == "0" {
            return Err(format!(
                "sink '{}': PostgreSQL at {} has max_prepared_transactions = 0, and exactly-once output needs \
                 prepared transactions: set max_prepared_transactions (at least the sink's parallelism times \
                 max-concurrent checkpoints, plus one) in postgresql.conf and restart the server, or run the job \
                 without [checkpointing] (at-least-once)",
                config.uid, config.url
            ));
        }
        let TwoPhase { job_id, restored, fork, until_stored, hold_for } = two_phase;
        let sink = hex::encode(&sha2::Sha256::digest(config.uid.as_bytes())[..4]);
        let covered = match &restored {
            Some(Restored { committed: Some(committed), .. }) => serde_json::from_value(committed["jobs"].clone())
                .map_err(|e| {
                    format!("sink '{}': the snapshot's record of its output is unreadable: {e}", config.uid)
                })?,
            // Recorded by an older weir: that job's transactions up to the barrier.
            Some(Restored { job_id, id, .. }) => Covered::from([(job_id.clone(), *id)]),
            None => Covered::new(),
        };
        // The jobs whose transactions are ours to resolve; a fork's parent resolves its own.
        let mut lineage = vec![job_id.clone()];
        lineage.extend(restored.as_ref().filter(|_| !fork).map(|r| r.job_id.clone()));
        let deferred = Arc::new(Mutex::new(Vec::new()));
        let rows = client
            .query("SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, 'weir:') ORDER BY gid", &[])
            .map_err(|e| config.error("listing prepared transactions", e))?;
        for row in rows {
            let gid: String = row.get(0);
            let Some((job, barrier)) =
                parse_gid(&gid, &sink).filter(|(job, _)| lineage.iter().any(|j| j.as_str() == *job))
            else {
                continue;
            };
            let verb = match covered.get(job).is_some_and(|&through| barrier <= through) {
                // Covered by a savepoint not stored yet: it is not a point a resume starts from.
                true if until_stored.is_some() => {
                    lock(&deferred).push(gid.clone());
                    continue;
                }
                true => "COMMIT",
                false => "ROLLBACK",
            };
            tracing::info!("sink '{}': {verb} PREPARED '{gid}', left by an earlier run", config.uid);
            if let Err(e) = client.batch_execute(&format!("{verb} PREPARED '{gid}'")) {
                return Err(config.blocked_error(client, &format!("resolving prepared transaction {gid}"), e));
            }
        }
        if let Some(until_stored) = until_stored.filter(|_| !lock(&deferred).is_empty()) {
            let (sink_config, waiting) = (config.clone(), deferred.clone());
            std::thread::Builder::new()
                .name("pg-commit".into())
                .spawn(move || match until_stored() {
                    Ok(()) => {
                        if let Err(e) = commit_all(&sink_config, &mut None, &waiting) {
                            tracing::warn!("{e}; the next checkpoint commits them");
                        }
                    }
                    Err(e) => tracing::warn!(
                        "sink '{}': the savepoint its output was handed over at is not stored ({e}); the next \
                         checkpoint commits that output",
                        sink_config.uid
                    ),
                })
                .map_err(|e| format!("sink '{}': cannot start its committer thread: {e}", config.uid))?;
        }
        let hold = hold_for
            .filter(|d| !d.is_zero())
            .map(|d| Arc::new(Hold { until: Instant::now() + d, decided: Mutex::new(BTreeMap::new()) }));
        Ok(Exactly { prefix: format!("weir:{job_id}:{sink}:"), job_id, covered, deferred, hold })
    }
}

/// The job id and barrier of transaction id `gid` if it is one of sink `sink`'s
/// (`weir:<job id>:<sink>:<subtask>:<n>`).
fn parse_gid<'a>(gid: &'a str, sink: &str) -> Option<(&'a str, u64)> {
    let mut parts = gid.split(':');
    let (weir, job, of, _subtask, barrier) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (weir == "weir" && of == sink && parts.next().is_none()).then_some(())?;
    Some((job, barrier.parse().ok()?))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Commits each prepared transaction `gids` takes out (one committed already is done), through
/// `connection` (opened when it is `None`, dropped when it breaks). Those not committed go back.
fn commit_all(
    config: &PostgresSinkConfig,
    connection: &mut Option<Client>,
    gids: &Mutex<Vec<String>>,
) -> Result<(), String> {
    let mut pending = std::mem::take(&mut *lock(gids));
    let result = commit_each(config, connection, &mut pending);
    lock(gids).extend(pending);
    result
}

/// Commits `pending` in order, removing each once done.
fn commit_each(
    config: &PostgresSinkConfig,
    connection: &mut Option<Client>,
    pending: &mut Vec<String>,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    if connection.is_none() {
        *connection = Some(config.connect()?);
    }
    let Some(client) = connection.as_mut() else { return Ok(()) };
    while let Some(gid) = pending.first() {
        match client.batch_execute(&format!("COMMIT PREPARED '{gid}'")) {
            Ok(()) => {}
            // Committed already: a restore commits again what a completed checkpoint holds.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {}
            Err(e) => {
                let message = config.blocked_error(client, &format!("committing transaction {gid}"), e);
                // A broken connection is opened again next time.
                *connection = None;
                return Err(message);
            }
        }
        pending.remove(0);
    }
    Ok(())
}

impl SinkFactory for PostgresSinkFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let mut client = self.config.connect()?;
        let gid_prefix = self.two_phase.as_ref().map(|p| format!("{}{}:", p.prefix, info.index));
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
            interrupt: info.interrupt.clone(),
            hold: self.two_phase.as_ref().and_then(|e| e.hold.clone()),
            gid_prefix,
            rows: Vec::new(),
            in_transaction: false,
        }))
    }

    fn commit(&self, id: u64, committables: Vec<serde_json::Value>) -> Result<(), String> {
        let Some(exactly) = &self.two_phase else { return Ok(()) };
        let gids = committables.iter().filter_map(serde_json::Value::as_str).map(str::to_string);
        if exactly.hold.as_ref().is_some_and(|hold| hold.held(id)) {
            // Not a point to resume from: what it would commit waits for one that is.
            lock(&exactly.deferred).extend(gids);
            return Ok(());
        }
        // What the snapshot it started from covers, if not committed yet, goes first.
        let mut pending = std::mem::take(&mut *lock(&exactly.deferred));
        pending.extend(gids);
        let pending = Mutex::new(pending);
        let result = commit_all(&self.config, &mut lock(&self.committer), &pending);
        // What could not be committed waits for the next checkpoint.
        lock(&exactly.deferred).extend(pending.into_inner().unwrap_or_else(|e| e.into_inner()));
        result
    }

    fn committed(&self, id: u64) -> Option<serde_json::Value> {
        let exactly = self.two_phase.as_ref()?;
        let mut jobs = exactly.covered.clone();
        jobs.insert(exactly.job_id.clone(), id);
        let held = exactly.hold.as_ref().is_some_and(|hold| lock(&hold.decided).get(&id) == Some(&true));
        match held {
            // Its output since the upgrade is in transactions the checkpoint does not hold.
            true => Some(serde_json::json!({ "jobs": jobs, HELD_OUTPUT: true })),
            false => Some(serde_json::json!({ "jobs": jobs })),
        }
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
    /// Raised when the job is canceled or the attempt ends: a statement still running is
    /// canceled in the server.
    interrupt: Interrupt,
    /// After an upgrade: output held back until its rollback window has passed.
    hold: Option<Arc<Hold>>,
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
            self.watched("starting a transaction", |client| client.batch_execute("BEGIN"))?;
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
        let (insert, doing) = (self.insert.clone(), format!("writing to table \"{}\"", self.config.table));
        self.watched(&doing, |client| client.execute(&insert, &params).map(drop))
    }

    /// Runs `statement` on the connection while a watcher sends PostgreSQL a cancel request if
    /// the subtask is interrupted meanwhile (a canceled job never waits for the server); a
    /// statement that fails is described by [`PostgresSinkConfig::blocked_error`].
    fn watched(
        &mut self,
        doing: &str,
        statement: impl FnOnce(&mut Client) -> Result<(), postgres::Error>,
    ) -> Result<(), String> {
        let token = self.client.cancel_token();
        let (done, watching) = crossbeam_channel::bounded::<()>(0);
        let interrupt = self.interrupt.clone();
        let result = std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    watching.recv_timeout(Duration::from_millis(50))
                {
                    if interrupt.is_raised() {
                        let _ = token.cancel_query(NoTls);
                        return;
                    }
                }
            });
            let result = statement(&mut self.client);
            drop(done);
            result
        });
        match result {
            Ok(()) => Ok(()),
            Err(_) if self.interrupt.is_raised() => Err(format!("sink '{}': canceled while {doing}", self.config.uid)),
            Err(e) => Err(self.config.blocked_error(&mut self.client, doing, e)),
        }
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

    fn pre_commit(&mut self, id: u64, lasting: bool) -> Result<Option<serde_json::Value>, String> {
        self.flush()?;
        let Some(prefix) = &self.gid_prefix else { return Ok(None) };
        // Held back: the rows stay in the open transaction, prepared at a later barrier.
        if !self.in_transaction || self.hold.as_ref().is_some_and(|hold| hold.holds(id, lasting)) {
            return Ok(None);
        }
        let gid = format!("{prefix}{id}");
        let prepare = format!("PREPARE TRANSACTION '{gid}'");
        self.watched(&format!("preparing transaction {gid}"), |client| client.batch_execute(&prepare))?;
        self.in_transaction = false;
        Ok(Some(serde_json::Value::String(gid)))
    }

    fn finish(&mut self) -> Result<(), String> {
        // With checkpointing the final barrier has prepared everything; without, rows go now.
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_are_read_back_only_for_their_sink() {
        assert_eq!(parse_gid("weir:abc:0badf00d:1:42", "0badf00d"), Some(("abc", 42)));
        assert_eq!(parse_gid("weir:abc:0badf00d:1:42", "12345678"), None, "another sink's");
        for other in ["left-behind", "weir:abc:0badf00d:1", "weir:abc:0badf00d:1:x", "weir:a:0badf00d:1:2:3"] {
            assert_eq!(parse_gid(other, "0badf00d"), None, "{other}");
        }
    }

    #[test]
    fn every_subtask_agrees_on_which_barriers_hold_output_back() {
        let hold = Hold { until: Instant::now() + Duration::from_secs(3600), decided: Mutex::new(BTreeMap::new()) };
        assert!(hold.holds(3, false));
        assert!(!hold.holds(4, true), "a savepoint's or the final barrier holds nothing back");
        assert!(hold.holds(5, false));
        assert!(hold.held(3) && !hold.held(4) && hold.held(5));
        assert_eq!(lock(&hold.decided).keys().copied().collect::<Vec<_>>(), [5], "earlier barriers are forgotten");
        let passed = Hold { until: Instant::now(), decided: Mutex::new(BTreeMap::from([(7, true)])) };
        assert!(passed.holds(7, false), "decided by the first subtask at it");
        assert!(!passed.holds(8, false), "the window has passed");
    }
}
