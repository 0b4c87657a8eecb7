//! The REST API agrees with its OpenAPI description (`/v1/openapi.json`): schemathesis (installed
//! into `.venv` by `cargo xtask build`) sends schema-valid and schema-violating requests to a real
//! server with a token and checks every answer's status and body against the description.
//! `POST /v1/jobs` (TOML) and `POST /v1/modules` (Wasm) take bodies it cannot generate; their
//! errors are covered by the other tests.
use std::time::Duration;

use weir_e2e::{Server, repo};

#[test]
fn the_api_answers_as_its_openapi_description_says() {
    let st = repo().join(".venv/bin/st");
    assert!(st.exists(), "{} is missing: run `cargo xtask build` first", st.display());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token", "schema-t0ken"]);
    // Its cache of found failures goes into the test's own directory, not the repository.
    let mut child = std::process::Command::new(&st)
        .current_dir(dir.path())
        .args(["run", &format!("{}/v1/openapi.json", server.url)])
        .args(["-H", "Authorization: Bearer schema-t0ken", "--checks", "all", "--max-examples", "25"])
        .args(["--exclude-path-regex", "^/v1/(jobs|modules)$", "--seed", "20261130", "--workers", "1"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("schemathesis starts");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("schemathesis did not finish within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains(" passed"), "{report}");
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}
