//! `/metrics`: the jobs' metrics in Prometheus's text format, read by a Prometheus text parser,
//! on `weir serve` and on `weir run`, under the API's token rule.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use weir_e2e::{Running, Server, blackhole_sink, generator_source, get_text, job, wasm_operator, write_job};

/// A generated job at 10,000 events/s (5 s), counting at parallelism 2, checkpointing.
fn slow_job(dir: &std::path::Path) -> String {
    let source = generator_source("events", 50_000, 100).replace("keys = 100\n", "keys = 100\nrate = 10000\n");
    let text =
        job("metered", 2, &[source, wasm_operator("count", "count", &["input = \"hash\""]), blackhole_sink("out")]);
    write_job(dir, &format!("{text}\n[checkpointing]\ninterval = \"300ms\"\nstorage = \"file://chk\"\n"))
}

fn parse(text: &str) -> Vec<Sample> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    scrape.samples
}

fn value(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The samples of metric `name` for job `id`, by (operator, subtask).
fn by_subtask(samples: &[Sample], name: &str, id: &str) -> BTreeMap<(String, String), f64> {
    samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get("job_id") == Some(id))
        .map(|s| {
            let label = |l: &str| s.labels.get(l).unwrap_or_default().to_string();
            ((label("operator"), label("subtask")), value(s))
        })
        .collect()
}

fn job_value(samples: &[Sample], name: &str, id: &str) -> Option<f64> {
    samples.iter().find(|s| s.metric == name && s.labels.get("job_id") == Some(id)).map(value)
}

/// Scrapes `url` until the job has completed a checkpoint; checks names, labels and that the
/// counters move between two scrapes.
fn scrape_a_running_job(url: &str, id: &str, token: Option<&str>) {
    let started = Instant::now();
    let first = loop {
        let (status, text) = get_text(url, token);
        assert_eq!(status, 200, "{text}");
        let samples = parse(&text);
        if job_value(&samples, "weir_job_numberOfCompletedCheckpoints_total", id).unwrap_or(0.0) >= 1.0 {
            break samples;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no completed checkpoint in the metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in ["weir_job_uptime", "weir_job_running", "weir_job_numRestarts_total", "weir_job_lastCheckpointDuration"]
    {
        assert!(job_value(&first, name, id).is_some(), "{name} for job {id}");
    }
    assert_eq!(job_value(&first, "weir_job_running", id), Some(1.0));
    assert!(job_value(&first, "weir_job_lastCheckpointSize", id).unwrap() > 0.0);
    let records_in = by_subtask(&first, "weir_task_numRecordsIn_total", id);
    let keys: Vec<(&str, &str)> = records_in.keys().map(|(o, s)| (o.as_str(), s.as_str())).collect();
    assert_eq!(keys, [("count", "0"), ("count", "1"), ("events", "0"), ("events", "1"), ("out", "0"), ("out", "1")]);
    let busy = by_subtask(&first, "weir_task_busyTimeMs_total", id);
    assert_eq!(
        busy.keys().map(|(o, s)| (o.as_str(), s.as_str())).collect::<Vec<_>>(),
        [("count", "0"), ("count", "1")]
    );
    let backpressured = by_subtask(&first, "weir_task_backPressuredTimeMs_total", id);
    assert_eq!(backpressured.len(), 6, "every subtask has a backpressure counter");
    let state = first
        .iter()
        .find(|s| {
            s.metric == "weir_operator_stateSize"
                && s.labels.get("job_id") == Some(id)
                && s.labels.get("operator") == Some("count")
        })
        .expect("the state size per operator");
    assert!(value(state) > 0.0, "the count operator holds state");
    std::thread::sleep(Duration::from_millis(500));
    let (_, text) = get_text(url, token);
    let second = parse(&text);
    let total = |samples: &[Sample]| by_subtask(samples, "weir_task_numRecordsOut_total", id).values().sum::<f64>();
    assert!(total(&second) > total(&first), "the counters move: {} then {}", total(&first), total(&second));
    assert!(job_value(&second, "weir_job_uptime", id) > job_value(&first, "weir_job_uptime", id));
}

#[test]
fn a_server_serves_its_jobs_metrics_and_they_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &slow_job(dir.path())]).stdout.trim().to_string();
    scrape_a_running_job(&format!("{}/metrics", server.url), &id, None);
    server.cli(&["cancel", &id]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "canceled");
    let (_, text) = server.get_text("/metrics", None);
    assert_eq!(job_value(&parse(&text), "weir_job_running", &id), Some(0.0), "a canceled job no longer runs");
}

#[test]
fn weir_run_serves_its_job_metrics_under_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_job(dir.path());
    let running = Running::start(&job, &["--token", "m3trics"]);
    let url = format!("{}/metrics", running.server);
    let (status, text) = get_text(&url, None);
    assert_eq!(status, 401, "{text}");
    assert_eq!(get_text(&url, Some("wrong")).0, 401);
    scrape_a_running_job(&url, &running.id, Some("m3trics"));
}

/// Parses a scrape with Prometheus's own Python parsers, the text format's and OpenMetrics's
/// (both strict where a label value is not escaped), and prints each sample of `metric` as a
/// JSON object of its labels, a line each.
fn strict_labels(text: &str, metric: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let script = format!(
        r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
scrape = sys.stdin.read()
seen = []
for parse in (text, openmetrics):
    labels = [s.labels for f in parse(scrape) for s in f.samples if s.name == "{metric}"]
    seen.append(labels)
assert seen[0] == seen[1], seen
for labels in seen[0]:
    print(json.dumps(labels))
"#
    );
    let mut python = std::process::Command::new(weir_e2e::repo().join(".venv/bin/python"))
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the .venv's python (cargo xtask build installs it)");
    python.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "the parsers rejected the scrape: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn label_values_are_escaped_so_a_job_name_cannot_forge_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // A name that, written unescaped, closes the label set and forges a second series.
    let name = r#"forged"} weir_job_running{job_id="x\y"#;
    let text = std::fs::read_to_string(slow_job(dir.path())).unwrap().replace("name = \"metered\"", &{
        let quoted = serde_json::to_string(name).unwrap();
        format!("name = {quoted}")
    });
    let job = write_job(dir.path(), &text);
    let submitted = server.cli(&["submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    let (status, scrape) = server.get_text("/metrics", None);
    assert_eq!(status, 200, "{scrape}");
    let running = strict_labels(&scrape, "weir_job_running");
    assert_eq!(running, vec![serde_json::json!({"job_id": id, "job_name": name})], "one series, the name intact");
    server.cli(&["cancel", &id]);
}
