//! The PostgreSQL sink's target: rows upserted per second at parallelism 2, exactly-once, with
//! checkpoints every second, into a real server started as the end-to-end tests start one.
use std::path::Path;

use anyhow::{Context, Result};
use weir_e2e::postgres::Postgres;

use super::{CountJob, run_job};
use crate::{Artifacts, step};

/// What the upsert run measured.
pub(super) struct Upserts {
    /// Events (each one upserted row) per second.
    pub(super) rate: f64,
    /// Rows in the table at the end: one per key.
    pub(super) rows: u64,
}

/// Counts `events` events over `keys` keys at parallelism 2 into a PostgreSQL table by upsert,
/// exactly-once, with checkpoints every second.
pub(super) fn upserts(artifacts: &Artifacts, dir: &Path, count: &str, events: u64, keys: u64) -> Result<Upserts> {
    step(&format!("PostgreSQL sink: {events} upserts over {keys} keys at p=2, exactly-once, checkpoints every 1 s"));
    let pg = Postgres::start(20);
    pg.psql("CREATE TABLE counts (key text PRIMARY KEY, count bigint NOT NULL)");
    let sink = format!(
        "[checkpointing]\ninterval = \"1s\"\nstorage = \"file://checkpoints\"\n\n\
         [[sink]]\nuid = \"counts\"\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/weir\"\n\
         table = \"counts\"\ncolumns = {{ key = \"key\", count = \"count\" }}\nmode = \"upsert\"\nkey-columns = [\"key\"]",
        pg.port
    );
    let job = CountJob {
        name: "postgres-upserts",
        operator: count,
        parallelism: 2,
        events: Some(events),
        keys,
        extra: &sink,
    };
    let job = job.write(dir, "postgres-upserts")?;
    // The generated job has a blackhole sink too: the postgres one gets the same stream.
    let run = run_job(&artifacts.weir, &job)?;
    let rows: u64 = pg.psql("SELECT count(*) FROM counts").parse().context("counting the table's rows")?;
    println!("    {:.0} upserts/s ({events} in {:.2} s), {rows} rows", run.rate(), run.seconds);
    Ok(Upserts { rate: run.rate(), rows })
}
