//! The Kafka targets, against a local tansu broker started as the end-to-end tests start one:
//! the Kafka source → Wasm count → blackhole at parallelism 1, beside the broker's own read limit
//! (measured in the same rounds with an independent client, librdkafka's batched consume), and
//! the end-to-end latency from a record produced to Kafka to its row committed in PostgreSQL with
//! exactly-once checkpoints every second.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_e2e::kafka::{Kafka, client};
use weir_e2e::postgres::Postgres;

use super::{median, now_ms, run_job};
use crate::{Artifacts, step};

/// Records a second read by weir and by the independent client, medians over the rounds.
pub(super) struct ReadRates {
    pub(super) weir: f64,
    pub(super) broker: f64,
    /// Records per CPU second of weir's source thread: what it could read from a faster broker.
    pub(super) per_source_cpu_s: f64,
}

/// Produces `events` records (100,000 keys) to a one-partition topic with weir's kafka sink,
/// then reads them `rounds` times with weir (Kafka → Wasm count → blackhole, p=1) and with the
/// independent client, interleaved.
pub(super) fn read_rates(
    artifacts: &Artifacts,
    dir: &Path,
    count: &str,
    events: u64,
    rounds: usize,
) -> Result<ReadRates> {
    let kafka = Kafka::start_direct();
    // Eight partitions: tansu's in-memory engine reads a long partition slower than short ones.
    kafka.create_topic("events", 8);
    step(&format!("Kafka: producing {events} records over 100000 keys"));
    let produce = dir.join("kafka-produce.toml");
    std::fs::write(
        &produce,
        format!(
            "name = \"kafka-produce\"\n[[source]]\nuid = \"events\"\ntype = \"generator\"\ncount = {events}\nkeys = 100000\n\
             [[sink]]\nuid = \"events-topic\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"events\"\n\
             properties = {{ \"linger.ms\" = 50, \"batch.num.messages\" = 10000 }}\n",
            kafka.bootstrap()
        ),
    )?;
    run_job(&artifacts.weir, &produce)?;
    let read = dir.join("kafka-read.toml");
    std::fs::write(
        &read,
        format!(
            "name = \"kafka-read\"\n[[source]]\nuid = \"events\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\n\
             topic = \"events\"\nstop-at = \"latest\"\n\n[[operator]]\nuid = \"count\"\n{count}\ninput = \"hash\"\n\n\
             [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\n",
            kafka.bootstrap()
        ),
    )?;
    let (mut weir, mut broker, mut per_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        step(&format!("round {round}/{rounds}: Kafka source -> Wasm count -> blackhole, p=1"));
        let run = run_job(&artifacts.weir, &read)?;
        println!("    {:.0} events/s ({} events in {:.2} s)", run.rate(), run.events, run.seconds);
        weir.push(run.rate());
        per_cpu.push(run.events as f64 / run.source_cpu_s);
        step(&format!("round {round}/{rounds}: the broker's read limit (confluent-kafka, batched consume)"));
        let out = client(&["read-rate", &kafka.bootstrap(), "events"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace().map(str::parse::<f64>);
        let (Some(Ok(records)), Some(Ok(seconds))) = (fields.next(), fields.next()) else {
            bail!("the read-rate client printed {text:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        println!("    {:.0} records/s ({records} records in {seconds:.2} s)", records / seconds);
        broker.push(records / seconds);
    }
    Ok(ReadRates { weir: median(&mut weir), broker: median(&mut broker), per_source_cpu_s: median(&mut per_cpu) })
}

/// Latencies from produced to committed, in milliseconds, and the broker's own.
pub(super) struct Latency {
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) rows: usize,
    /// The broker's delay from produced to fetched (p50, p99), measured with an independent
    /// client on a fresh topic beforehand.
    pub(super) broker_ms: (f64, f64),
}

/// Records a second and seconds of the latency run: tansu's in-memory engine slows down as
/// partitions grow (2,000 records a second fall behind within 10 seconds, with any client).
const LATENCY_RATE: u64 = 500;
const LATENCY_SECONDS: u64 = 20;

/// Produces [`LATENCY_RATE`] records a second for [`LATENCY_SECONDS`] while a job copies them
/// into PostgreSQL, exactly-once with checkpoints every second; a row's latency is from its
/// record's production to the first query (every 50 ms) that sees it committed.
pub(super) fn latency(artifacts: &Artifacts, dir: &Path) -> Result<Latency> {
    const RATE: u64 = LATENCY_RATE;
    const SECONDS: u64 = LATENCY_SECONDS;
    step(&format!("Kafka -> PostgreSQL latency: {RATE} records/s for {SECONDS} s, checkpoints every 1 s"));
    let kafka = Kafka::start_direct();
    kafka.create_topic("delivery", 3);
    let out = client(&["delivery", &kafka.bootstrap(), "delivery", &RATE.to_string(), &SECONDS.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let broker_ms = match text.split_whitespace().map(str::parse::<f64>).collect::<Vec<_>>()[..] {
        [Ok(p50), Ok(p99)] => (p50, p99),
        _ => bail!("the delivery client printed {text:?}: {}", String::from_utf8_lossy(&out.stderr)),
    };
    println!("    the broker alone: p50 {:.0} ms, p99 {:.0} ms", broker_ms.0, broker_ms.1);
    let kafka = Kafka::start_direct();
    kafka.create_topic("clicks", 3);
    let pg = Postgres::start(20);
    // `seen` marks the rows a query has returned: rows of two subtasks' transactions commit in
    // either order, so no id or time tells which are new.
    pg.psql(
        "CREATE TABLE latency (user_id text NOT NULL, sent_ms bigint NOT NULL, seen boolean NOT NULL DEFAULT false)",
    );
    let job = dir.join("kafka-latency.toml");
    let _ = std::fs::remove_dir_all(dir.join("checkpoints-latency")); // an earlier bench's
    std::fs::write(
        &job,
        format!(
            "name = \"kafka-latency\"\nparallelism = 2\n\n[[source]]\nuid = \"clicks\"\ntype = \"kafka\"\n\
             bootstrap-servers = \"{}\"\ntopic = \"clicks\"\nproperties = {{ \"fetch.wait.max.ms\" = 100 }}\n\n[[sink]]\nuid = \"rows\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres@127.0.0.1:{}/weir\"\ntable = \"latency\"\n\
             columns = {{ user_id = \"user\", sent_ms = \"sent_ms\" }}\n\n\
             [checkpointing]\ninterval = \"1s\"\nstorage = \"file://checkpoints-latency\"\n",
            kafka.bootstrap(),
            pg.port
        ),
    )?;
    let weir = std::process::Command::new(&artifacts.weir)
        .args(["run", &job.to_string_lossy(), "--listen", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting weir")?;
    let _weir = KilledOnDrop(weir);
    std::thread::sleep(Duration::from_secs(2));
    let bootstrap = kafka.bootstrap();
    let producer =
        std::thread::spawn(move || client(&["timed", &bootstrap, "clicks", &RATE.to_string(), &SECONDS.to_string()]));
    let mut latencies = Vec::new();
    let started = Instant::now();
    while latencies.len() < (RATE * SECONDS) as usize && started.elapsed() < Duration::from_secs(SECONDS + 30) {
        std::thread::sleep(Duration::from_millis(50));
        let rows = pg.psql("UPDATE latency SET seen = true WHERE NOT seen RETURNING sent_ms");
        let seen = now_ms();
        // psql ends with the command's tag ("UPDATE n").
        for sent in rows.lines().filter(|l| !l.starts_with("UPDATE")) {
            latencies.push(seen.saturating_sub(sent.parse().context("a sent_ms")?) as f64);
        }
    }
    let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    if !produced.status.success() {
        bail!("producing timed records failed: {}", String::from_utf8_lossy(&produced.stderr));
    }
    if latencies.is_empty() {
        bail!("no row reached PostgreSQL");
    }
    let rows = latencies.len();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((rows as f64 * q) as usize).min(rows - 1)];
    println!("    {rows} rows: p50 {:.0} ms, p99 {:.0} ms", at(0.5), at(0.99));
    Ok(Latency { p50_ms: at(0.5), p99_ms: at(0.99), rows, broker_ms })
}

/// A child process killed when the measurement ends, also by an error.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
