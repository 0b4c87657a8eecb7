//! A real PostgreSQL server for the tests (Debian's `postgresql` package, installed by
//! `cargo xtask build`), started on a free loopback port in a temporary directory as the
//! unprivileged `postgres` user (the server refuses to run as root), stopped when dropped.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::free_port;

/// A running PostgreSQL server with password authentication for the `weir` user.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The password of the `weir` user the tests connect as.
pub const PASSWORD: &str = "weir-test-secret";

/// The directory of PostgreSQL's server programs (`/usr/lib/postgresql/<version>/bin`).
fn server_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed: run `cargo xtask build`");
    let mut bins: Vec<PathBuf> =
        versions.flatten().map(|v| v.path().join("bin")).filter(|b| b.join("initdb").exists()).collect();
    bins.sort();
    bins.pop().expect("a PostgreSQL server under /usr/lib/postgresql")
}

/// Runs `program args…` as the `postgres` user.
fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser runs")
}

impl Postgres {
    /// Starts a server allowing `max_prepared` prepared transactions, with a user `weir`
    /// (password [`PASSWORD`]) owning the database `weir`.
    pub fn start(max_prepared: u32) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap();
        assert!(status.success(), "chown of the server's directory");
        let bin = server_bin();
        let data = dir.path().join("data");
        let data_arg = data.to_string_lossy().into_owned();
        let init = as_postgres(&bin.join("initdb"), &["-D", &data_arg, "-A", "trust", "-U", "postgres"]);
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let hba =
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let log = dir.path().join("log").to_string_lossy().into_owned();
        // A free port can be taken by another test's server between our look and its bind:
        // then the start fails, and a second port is tried.
        let mut tries = 0;
        let port = loop {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions={max_prepared} -c fsync=off",
                dir.path().display()
            );
            let started =
                as_postgres(&bin.join("pg_ctl"), &["-D", &data_arg, "-l", &log, "-o", &options, "-w", "start"]);
            if started.status.success() {
                break port;
            }
            tries += 1;
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(tries < 3, "pg_ctl start: {}\n{logged}", String::from_utf8_lossy(&started.stderr));
        };
        let server = Postgres { dir, bin, port };
        server.psql_as("postgres", "postgres", &format!("CREATE USER weir PASSWORD '{PASSWORD}'"));
        server.psql_as("postgres", "postgres", "CREATE DATABASE weir OWNER weir");
        server
    }

    /// The URL weir connects with (no password: that comes from `PGPASSWORD_TEST`).
    pub fn url(&self) -> String {
        format!("postgres://weir@127.0.0.1:{}/weir", self.port)
    }

    /// The environment holding the password for `password-env = "WEIR_TEST_PG_PASSWORD"`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("WEIR_TEST_PG_PASSWORD".to_string(), PASSWORD.to_string())]
    }

    fn psql_as(&self, user: &str, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user, "-d", database, "-At", "-v"])
            .arg("ON_ERROR_STOP=1")
            .args(["-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Runs `sql` in the `weir` database as the `weir` user; returns its rows, `|`-separated.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as("weir", "weir", sql)
    }

    /// Stops the server at once and starts it again on the same port.
    pub fn restart(&self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        // With its log file: a server writing to pg_ctl's output would hold it open for good.
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        let restarted =
            as_postgres(&self.bin.join("pg_ctl"), &["-D", &data, "-l", &log, "-m", "immediate", "-w", "restart"]);
        assert!(restarted.status.success(), "pg_ctl restart: {}", String::from_utf8_lossy(&restarted.stderr));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
