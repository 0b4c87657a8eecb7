//! The API against what a hostile web page or client does to it: a page of another loopback
//! origin open in Debian's headless Chromium tries to start a job on a token-less `weir serve`
//! (cross-site request forgery), and requests name a host of an attacker's (DNS rebinding).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_e2e::{Server, file_sink, file_source, job, wasm_operator, write_job};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Serves `page` at every path on a free loopback port, and sends each request's path to the
/// receiver it returns (the page reports there how its requests went).
fn serve_page(page: String) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (paths, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let mut stream = reader.into_inner();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes());
            if paths.send(path).is_err() {
                return;
            }
        }
    });
    (port, received)
}

/// Sends `GET /v1/jobs` to the server at `port` naming `host`; returns the status line.
fn get_naming_host(port: u16, host: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /v1/jobs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_page_of_another_origin_cannot_start_a_job_on_a_tokenless_server() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `cargo xtask build` installs Debian's chromium");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // The job the page submits copies a file of the user's to where the page chose.
    let secret = dir.path().join("secret.jsonl");
    std::fs::write(&secret, "{\"user\":\"alice\",\"card\":\"4111\"}\n").unwrap();
    let stolen = dir.path().join("stolen");
    let text = job(
        "exfiltrate",
        1,
        &[
            file_source("secret", &secret),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            file_sink("out", &stolen),
        ],
    );
    let job_text = serde_json::to_string(&std::fs::read_to_string(write_job(dir.path(), &text)).unwrap()).unwrap();
    // Two tries: the request a page may send without asking (no-cors, text/plain), and one with
    // a JSON type, which the browser first asks the server about (a preflight).
    let page = format!(
        r#"<!doctype html><script>
const target = "{url}/v1/jobs";
const report = (what) => fetch("/done?" + what);
fetch(target, {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }}, body: {job_text} }})
  .then(() => report("simple=sent"), (e) => report("simple=blocked"))
  .then(() => fetch(target, {{ method: "POST", headers: {{ "Content-Type": "application/toml" }}, body: {job_text} }}))
  .then(() => report("preflighted=sent"), (e) => report("preflighted=blocked"));
</script>"#,
        url = server.url
    );
    let (port, requests) = serve_page(page);
    let mut chromium = std::process::Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", dir.path().join("chromium").display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reports = Vec::new();
    let started = Instant::now();
    while reports.len() < 2 && started.elapsed() < Duration::from_secs(60) {
        if let Ok(path) = requests.recv_timeout(Duration::from_millis(200)) {
            reports.extend(path.strip_prefix("/done?").map(str::to_string));
        }
    }
    let _ = chromium.kill();
    let _ = chromium.wait();
    // The simple request reaches the server (the page cannot read the answer); the preflighted
    // one never leaves the browser.
    assert_eq!(reports, ["simple=sent", "preflighted=blocked"], "what the page saw");
    let (_, jobs) = server.http("GET", "/v1/jobs", b"", None);
    assert_eq!(jobs["jobs"], serde_json::json!([]), "no job was started: {jobs}");
    assert!(!stolen.exists(), "nothing was written to {}", stolen.display());

    // The server's own clients still can: the CLI submits the same job.
    let submitted = server.cli(&["submit", &dir.path().join("job.toml").to_string_lossy()]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let ended = server.wait_for_job(submitted.stdout.trim());
    assert_eq!(ended["state"], "finished", "{ended}");
}

#[test]
fn requests_naming_another_host_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--allowed-host", "weir.internal"]);
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(get_naming_host(port, "attacker.example"), "HTTP/1.1 403 Forbidden");
    assert_eq!(get_naming_host(port, &format!("attacker.example:{port}")), "HTTP/1.1 403 Forbidden");
    for ours in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "weir.internal".to_string()] {
        assert_eq!(get_naming_host(port, &ours), "HTTP/1.1 200 OK", "{ours}");
    }
    let (status, refused) = server.http("POST", "/v1/jobs/nope/cancel", b"", None);
    assert_eq!(status, 404, "a JSON request from a client passes the checks: {refused}");
}

/// 1,100 idle connections to a server with 1,024 file descriptors: its running job (checkpoints
/// every 100 ms into files) goes on unharmed, and the API answers again once the idle connections
/// time out.
#[test]
fn idle_connections_neither_starve_the_jobs_nor_silence_the_api_for_long() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under(&["prlimit", "--nofile=1024:1024", "--"], &dir.path().join("data"), &[], &[]);
    let input = dir.path().join("clicks.jsonl");
    weir_e2e::generated_clicks(&input, 24_000, 40);
    let text = weir_e2e::clicks_job(&input, "count", 2, &dir.path().join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    let job =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n"));
    let submitted = server.cli(&["submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    let port = server.url.rsplit(':').next().unwrap().to_string();
    // The connections come from a helper of their own: this test's process keeps its descriptors.
    // Non-blocking connects: those the server's backlog cannot take yet keep knocking.
    let script = format!(
        "import resource, socket, time\n\
         soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n\
         held = []\n\
         for _ in range(1100):\n\
         \x20   s = socket.socket()\n\
         \x20   s.setblocking(False)\n\
         \x20   s.connect_ex(('127.0.0.1', {port}))\n\
         \x20   held.append(s)\n\
         time.sleep(1)\n\
         print(len(held), flush=True)\n\
         time.sleep(120)\n"
    );
    let mut holder = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut opened = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut opened).unwrap();
    assert_eq!(opened.trim(), "1100", "the helper knocks with 1,100 connections");
    // The API answers once the idle connections ahead of it have timed out (10 s each, as many
    // at once as its share of descriptors: a few rounds), not never.
    let asked = Instant::now();
    let listed = server.cli(&["jobs"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(asked.elapsed() < Duration::from_secs(90), "answered after {:?}", asked.elapsed());
    let _ = holder.kill();
    let _ = holder.wait();
    let ended = server.wait_for_job_within(&id, Duration::from_secs(60));
    assert_eq!(ended["state"], "finished", "{ended}");
    assert_eq!(ended["attempt"], 0, "never restarted: {ended}");
    let expected = weir_e2e::expected_lines(&weir_e2e::expected_counts(&input));
    assert_eq!(weir_e2e::sink_lines(&dir.path().join("out")), expected);
    assert!(!server.log().contains("Too many open files"), "{}", server.log());
}
