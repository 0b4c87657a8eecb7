//! A real S3-compatible server for the tests (moto's, installed into `.venv` by
//! `cargo xtask build`), on loopback, with a proxy in front of it that a test can take down to
//! simulate a storage outage.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::OutageProxy;
use crate::{free_port, repo};

/// The bucket every test server starts with.
pub const BUCKET: &str = "weir-test";

/// A moto S3 server with bucket [`BUCKET`], reached through an [`OutageProxy`]; killed when
/// dropped.
pub struct S3Server {
    child: Child,
    /// Direct address of the server, for the test's own listing.
    direct: String,
    /// The proxy weir talks to.
    pub proxy: OutageProxy,
}

impl S3Server {
    /// Starts the server and creates the bucket.
    pub fn start() -> S3Server {
        let moto = repo().join(".venv/bin/moto_server");
        assert!(moto.exists(), "{} is missing: run `cargo xtask build` first", moto.display());
        let port = free_port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let direct = format!("http://127.0.0.1:{port}");
        let server = S3Server { child, proxy: OutageProxy::start(port), direct };
        let started = Instant::now();
        while ureq::put(&format!("{}/{BUCKET}", server.direct)).send_empty().is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The environment that points weir's `s3://` storage at this server, through the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{}", self.proxy.port)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The keys in the bucket under `prefix`, sorted (read directly, not through the proxy).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.direct);
        let body = ureq::get(&url).call().expect("list").into_body().read_to_string().expect("body");
        let mut keys: Vec<String> =
            body.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>")).map(|(k, _)| k.to_string()).collect();
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
