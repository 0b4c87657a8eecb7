//! The client verbs: `modules upload|list`, `submit`, `jobs`, `status`, `cancel`, over the REST API.
//! (About 420 lines: one short method per verb, sharing the connection and the printing; they
//! read best side by side.)
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

use super::CliError;
use crate::checkpoint::savepoint::SavepointFormat;

#[derive(clap::Subcommand)]
pub(super) enum ModulesCommand {
    /// Upload a .wasm component; prints its sha256, to name it in job files as `sha256:<hex>`.
    Upload {
        /// The component file.
        file: PathBuf,
    },
    /// List the server's modules.
    List,
}

/// A connection to a weir server.
/// Whether an upgrade tries its modules first.
#[derive(Clone, Copy)]
pub(super) enum Trial {
    /// Only the trial, with this many key groups per operator subtask.
    Only(u32),
    /// The trial, then the upgrade if it passed.
    First(u32),
    /// The upgrade alone.
    Skip,
}

pub(super) struct Client {
    server: String,
    token: Option<String>,
    json: bool,
    agent: ureq::Agent,
}

impl Client {
    pub(super) fn new(server: &str, token: Option<String>, json: bool) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client { server: server.trim_end_matches('/').to_string(), token, json, agent }
    }

    /// Sends a request and returns the JSON answer; a non-2xx answer is an error carrying the
    /// server's message, a connection failure a [`CliError::Unreachable`].
    pub(super) fn call(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Value> {
        let (status, value) = self.answer(method, path, body)?;
        match status {
            200..300 => Ok(value),
            _ => Err(refusal(status, &value)),
        }
    }

    /// Sends a request and returns the answer's status and JSON, whatever the status.
    fn answer(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.server);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let (content_type, bytes) = body.unwrap_or(("application/octet-stream", Vec::new()));
        let request = request.header("Content-Type", content_type).body(bytes).context("building the request")?;
        let response = self.agent.run(request).map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_) => {
                anyhow::Error::new(CliError::Unreachable { server: self.server.clone(), cause: e.to_string() })
            }
            other => anyhow::Error::new(other).context(format!("{method} {url}")),
        })?;
        let status = response.status();
        let text = response.into_body().read_to_string().context("reading the server's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status.as_u16(), value))
    }

    /// Disposes of savepoint `location` (absolute, or a URL) through the server's rules: the
    /// server disposes of one in its library, and refuses one a job that has not ended may still
    /// go back to. True when the server disposed of it, false when it knows no such savepoint
    /// (then it is the caller's to delete).
    pub(super) fn dispose_savepoint(&self, location: &str) -> anyhow::Result<bool> {
        let (status, answer) =
            self.answer("DELETE", &format!("/v1/savepoints?location={}", query_value(location)), None)?;
        match status {
            200..300 => Ok(true),
            404 => Ok(false),
            _ => Err(refusal(status, &answer)),
        }
    }

    /// The id of the job `given` names: a whole id, or the start of exactly one job's id (as
    /// lists and the dashboard show them shortened).
    pub(super) fn job_id(&self, given: &str) -> anyhow::Result<String> {
        if given.len() == 32 {
            return Ok(given.to_string());
        }
        let jobs = self.call("GET", "/v1/jobs", None)?;
        let matching = jobs["jobs"].as_array().into_iter().flatten().filter(|j| str(&j["id"]).starts_with(given));
        let matching = matching.map(|j| {
            let id = str(&j["id"]).to_string();
            (id.clone(), format!("{id} ({}, {})", str(&j["name"]), str(&j["state"])))
        });
        one_of(given, "job", "weir jobs", matching.collect())
    }

    /// The module `sha256:<hex>` names: itself, or the one stored module whose hash starts with
    /// `<hex>`.
    fn module_reference(&self, given: &str) -> anyhow::Result<String> {
        let Some(prefix) = given.strip_prefix("sha256:").filter(|hex| hex.len() < 64) else {
            return Ok(given.to_string());
        };
        let modules = self.call("GET", "/v1/modules", None)?;
        let matching = modules["modules"].as_array().into_iter().flatten();
        let matching = matching.filter(|m| str(&m["sha256"]).starts_with(prefix)).map(|m| {
            let hash = str(&m["sha256"]).to_string();
            (hash.clone(), format!("sha256:{hash} ({} {})", str(&m["name"]), str(&m["version"])))
        });
        Ok(format!("sha256:{}", one_of(prefix, "module", "weir modules list", matching.collect())?))
    }

    /// The savepoint `given` names: a path that exists or a URL as it is, else the one savepoint
    /// of the server's library whose directory name, or the hex at its end, starts with `given`.
    /// Anything else (no server, no match) is left as given, for the caller to report.
    pub(super) fn savepoint_location(&self, given: &str) -> anyhow::Result<String> {
        // A path with a directory in it, or a URL, is no name's start.
        if given.contains('/') || Path::new(given).exists() {
            return Ok(given.to_string());
        }
        let Ok(library) = self.call("GET", "/v1/savepoints", None) else { return Ok(given.to_string()) };
        let matching = library["savepoints"].as_array().into_iter().flatten().filter_map(|s| {
            let location = str(&s["location"]);
            let name = location.rsplit('/').next().unwrap_or(location);
            let hex = name.rsplit('-').next().unwrap_or(name);
            (name.starts_with(given) || hex.starts_with(given))
                .then(|| (location.to_string(), format!("{location} ({})", str(&s["job-name"]))))
        });
        let matching: Vec<(String, String)> = matching.collect();
        match matching.is_empty() {
            true => Ok(given.to_string()),
            false => one_of(given, "savepoint", "weir savepoints", matching),
        }
    }

    pub(super) fn print_json(&self, value: &Value) -> anyhow::Result<bool> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(self.json)
    }

    fn upload(&self, file: &Path) -> anyhow::Result<Value> {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read module file {}", file.display()))?;
        self.call("POST", "/v1/modules", Some(("application/wasm", bytes)))
            .with_context(|| format!("uploading {}", file.display()))
    }

    pub(super) fn modules(&self, command: &ModulesCommand) -> anyhow::Result<()> {
        match command {
            ModulesCommand::Upload { file } => {
                let info = self.upload(file)?;
                if !self.print_json(&info)? {
                    println!("sha256:{}  {} {}", str(&info["sha256"]), str(&info["name"]), str(&info["version"]));
                }
            }
            ModulesCommand::List => {
                let list = self.call("GET", "/v1/modules", None)?;
                if !self.print_json(&list)? {
                    println!("{:<71} {:<16} {:<10} {:>10}", "MODULE", "NAME", "VERSION", "BYTES");
                    for m in list["modules"].as_array().into_iter().flatten() {
                        let module = format!("sha256:{}", str(&m["sha256"]));
                        let size = m["size"].to_string();
                        println!("{module:<71} {:<16} {:<10} {size:>10}", str(&m["name"]), str(&m["version"]));
                    }
                }
            }
        }
        Ok(())
    }

    /// Uploads the modules a job file names by path, makes its source and sink paths absolute,
    /// and submits it.
    pub(super) fn submit(
        &self,
        job: &Path,
        from_savepoint: Option<&str>,
        allow_non_restored: bool,
        fork: bool,
    ) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(job).with_context(|| format!("cannot read job file {}", job.display()))?;
        // Edited in place: the server keeps the job file as written, its comments and order
        // with it, only module references and relative paths rewritten.
        let mut doc: toml_edit::DocumentMut =
            text.parse().with_context(|| format!("job file {} is not valid TOML", job.display()))?;
        let base = job.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        for operator in tables(&mut doc, "operator") {
            if let Some(module) = operator.get("module").and_then(|m| m.as_str())
                && !module.starts_with("sha256:")
            {
                let info = self.upload(&base.join(module))?;
                replace_string(operator, "module", format!("sha256:{}", str(&info["sha256"])));
            }
        }
        for kind in ["source", "sink"] {
            for vertex in tables(&mut doc, kind) {
                if let Some(path) = vertex.get("path").and_then(|p| p.as_str()) {
                    let absolute = base.join(path).to_string_lossy().into_owned();
                    replace_string(vertex, "path", absolute);
                }
            }
        }
        // Relative checkpoint and savepoint directories are relative to the job file too, not
        // to the server (a savepoint directory may be written without `file://`).
        if let Some(checkpointing) = doc.get_mut("checkpointing").and_then(toml_edit::Item::as_table_like_mut) {
            for key in ["storage", "savepoint-dir"] {
                let Some(url) = checkpointing.get(key).and_then(|u| u.as_str()) else { continue };
                let path = url.strip_prefix("file://").unwrap_or(url);
                if url.contains("://") && !url.starts_with("file://") || Path::new(path).is_absolute() {
                    continue;
                }
                let absolute = format!("file://{}", base.join(path).display());
                replace_string(checkpointing, key, absolute);
            }
        }
        let body = doc.to_string();
        let mut path = "/v1/jobs".to_string();
        if let Some(savepoint) = from_savepoint {
            path = format!("{path}?from-savepoint={}", query_value(&local_or_url(savepoint)));
            if allow_non_restored {
                path.push_str("&allow-non-restored-state=true");
            }
            if fork {
                path.push_str("&fork=true");
            }
        }
        let answer = self.call("POST", &path, Some(("application/toml", body.into_bytes())))?;
        if !self.print_json(&answer)? {
            println!("{}", str(&answer["id"]));
        }
        Ok(())
    }

    pub(super) fn jobs(&self) -> anyhow::Result<()> {
        let list = self.call("GET", "/v1/jobs", None)?;
        if !self.print_json(&list)? {
            println!("{:<32}  {:<24} {:<9} {:<20}", "ID", "NAME", "STATE", "SUBMITTED (UTC)");
            for j in list["jobs"].as_array().into_iter().flatten() {
                let submitted = time(&j["submitted-at"]);
                println!("{:<32}  {:<24} {:<9} {submitted:<20}", str(&j["id"]), str(&j["name"]), str(&j["state"]));
            }
        }
        Ok(())
    }

    pub(super) fn status(&self, id: &str) -> anyhow::Result<()> {
        let job = self.call("GET", &format!("/v1/jobs/{id}"), None)?;
        if self.print_json(&job)? {
            return Ok(());
        }
        println!("job {} '{}': {}", str(&job["id"]), str(&job["name"]), str(&job["state"]));
        println!("submitted {}", time(&job["submitted-at"]));
        if let Some(failure) = job["failure"].as_str() {
            println!("failure: {failure}");
        }
        let failures = job["failures"].as_array().map_or(0, Vec::len);
        if job["attempt"].as_u64().unwrap_or(0) > 0 || failures > 0 {
            println!("attempt {} ({failures} failures):", job["attempt"]);
            for f in job["failures"].as_array().into_iter().flatten() {
                println!("  {} attempt {}: {}", time(&f["timestamp"]), f["attempt"], str(&f["cause"]));
            }
        }
        // IN and OUT over all the job's runs (attempts, upgrades, rollbacks); the current run's
        // beside them, and per subtask.
        println!(
            "{:<8} {:<24} {:>11} {:>12} {:>12} {:>12} {:>12}  this run per subtask in/out",
            "KIND", "UID", "PARALLELISM", "IN", "OUT", "RUN IN", "RUN OUT"
        );
        for v in job["vertices"].as_array().into_iter().flatten() {
            let subtasks: Vec<String> = v["subtasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{}/{}", s["events-in"], s["events-out"]))
                .collect();
            // `Value`'s Display ignores width: format the numbers as strings first.
            let [parallelism, total_in, total_out, run_in, run_out] =
                [&v["parallelism"], &v["total-events-in"], &v["total-events-out"], &v["events-in"], &v["events-out"]]
                    .map(Value::to_string);
            println!(
                "{:<8} {:<24} {parallelism:>11} {total_in:>12} {total_out:>12} {run_in:>12} {run_out:>12}  {}",
                str(&v["kind"]),
                str(&v["uid"]),
                subtasks.join(" ")
            );
        }
        print_versions(&job);
        print_connector_status(&job);
        print_event_time(&job);
        print_quarantined(&job);
        Ok(())
    }

    pub(super) fn checkpoints(&self, id: &str) -> anyhow::Result<()> {
        let stats = self.call("GET", &format!("/v1/jobs/{id}/checkpoints"), None)?;
        if self.print_json(&stats)? {
            return Ok(());
        }
        let c = &stats["counts"];
        println!(
            "checkpoints: {} triggered, {} completed, {} failed, {} in progress, {} restored",
            c["total"], c["completed"], c["failed"], c["in-progress"], c["restored"]
        );
        if let Some(r) = stats["latest"]["restored"].as_object() {
            let kind = if r["is-savepoint"].as_bool() == Some(true) { "savepoint" } else { "checkpoint" };
            println!("restored from {kind} {} ({})", r["id"], str(&r["external-path"]));
        }
        if let Some(f) = stats["latest"]["failed"]["failure-message"].as_str() {
            println!("latest failure (checkpoint {}): {f}", stats["latest"]["failed"]["id"]);
        }
        println!(
            "{:>10}  {:<11} {:<20} {:>12} {:>12} {:>12} {:>13}",
            "ID", "STATUS", "TRIGGERED (UTC)", "DURATION", "FULL SIZE", "UPLOADED", "ALIGNMENT"
        );
        for r in stats["history"].as_array().into_iter().flatten() {
            let ms = |v: &Value| format!("{:.1} ms", v.as_f64().unwrap_or(0.0));
            println!(
                "{:>10}  {:<11} {:<20} {:>12} {:>12} {:>12} {:>13}",
                r["id"].to_string(),
                str(&r["status"]),
                time(&r["trigger-timestamp"]),
                ms(&r["end-to-end-duration-ms"]),
                r["state-size"].to_string(),
                r["checkpointed-size"].to_string(),
                ms(&r["alignment-duration-ms"]),
            );
        }
        Ok(())
    }

    /// Asks for a savepoint of job `id` (with `stop`, its drain flag: stop-with-savepoint), waits
    /// for it and prints where it is.
    pub(super) fn savepoint(
        &self,
        id: &str,
        dir: Option<&str>,
        format: SavepointFormat,
        stop: Option<bool>,
    ) -> anyhow::Result<()> {
        let mut body = serde_json::json!({ "format": format.to_string() });
        if let Some(dir) = dir {
            body["target-directory"] = Value::String(local_or_url(dir));
        }
        let verb = match stop {
            Some(drain) => {
                body["drain"] = Value::Bool(drain);
                "stop"
            }
            None => "savepoints",
        };
        let answer = self.call(
            "POST",
            &format!("/v1/jobs/{id}/{verb}"),
            Some(("application/json", body.to_string().into_bytes())),
        )?;
        let status = self.wait_for(&format!("/v1/jobs/{id}/savepoints/{}", str(&answer["request-id"])))?;
        if self.print_json(&status)? {
            return Ok(());
        }
        match str(&status["status"]) {
            "completed" => {
                println!("{}", str(&status["location"]));
                Ok(())
            }
            _ => bail!("the savepoint of job {id} failed: {}", str(&status["cause"])),
        }
    }

    /// The directory job `id`'s file sink `sink` (or its first) writes to, from its job file on
    /// the server.
    pub(super) fn output_dir(&self, id: &str, sink: Option<&str>) -> anyhow::Result<PathBuf> {
        let job = self.call("GET", &format!("/v1/jobs/{id}"), None)?;
        crate::control::compare::output_dir(str(&job["job"]), Path::new(""), sink)
            .map_err(|cause| anyhow::anyhow!("job {id} cannot be compared: {cause}"))
    }

    /// The server's comparison of jobs `a` and `b`'s committed outputs (of file sink `sink`, or
    /// each job's first).
    pub(super) fn compare(
        &self,
        a: &str,
        b: &str,
        sink: Option<&str>,
    ) -> anyhow::Result<crate::control::compare::Comparison> {
        let sink = sink.map(|uid| format!("&sink={}", query_value(uid))).unwrap_or_default();
        let comparison = self.call("GET", &format!("/v1/compare?a={a}&b={b}{sink}"), None)?;
        serde_json::from_value(comparison).context("the server's comparison is unreadable")
    }

    /// Rolls job `id` back from its last upgrade and waits for it.
    pub(super) fn rollback(&self, id: &str) -> anyhow::Result<()> {
        let answer = self.call("POST", &format!("/v1/jobs/{id}/rollback"), None)?;
        let status = self.wait_for(&format!("/v1/jobs/{id}/upgrades/{}", str(&answer["request-id"])))?;
        if self.print_json(&status)? {
            return Ok(());
        }
        match str(&status["status"]) {
            "rolled-back" => {
                println!("rolled back job {id}: it runs the modules it ran before its last upgrade again");
                println!("from savepoint: {}", str(&status["savepoint"]));
                Ok(())
            }
            _ => bail!("the rollback of job {id} failed: {}", str(&status["cause"])),
        }
    }

    /// Polls a request's status at `path` until it is no longer in progress.
    fn wait_for(&self, path: &str) -> anyhow::Result<Value> {
        loop {
            let status = self.call("GET", path, None)?;
            if status["status"] != "in-progress" {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Uploads the modules named by path, asks for the upgrade (or only its trial), waits for it
    /// and reports it.
    /// `--operator UID=MODULE` arguments as `{uid: "sha256:<hex>"}`, uploading module files.
    pub(super) fn module_references(&self, operators: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
        let mut replacements = serde_json::Map::new();
        for pair in operators {
            let (uid, module) = pair
                .split_once('=')
                .with_context(|| format!("--operator {pair}: expected UID=MODULE (a .wasm file or sha256:<hex>)"))?;
            let reference = match module.strip_prefix("sha256:") {
                Some(_) => self.module_reference(module)?,
                None => format!("sha256:{}", str(&self.upload(Path::new(module))?["sha256"])),
            };
            replacements.insert(uid.to_string(), Value::String(reference));
        }
        Ok(replacements)
    }

    /// Upgrades job `id`'s `operators` (UID=MODULE each), or carries out a canary `step` (its
    /// field in the request and its value) on them.
    pub(super) fn upgrade(
        &self,
        id: &str,
        operators: &[String],
        trial: Trial,
        step: Option<(&str, Value)>,
    ) -> anyhow::Result<()> {
        let mut body = serde_json::json!({ "operators": self.module_references(operators)? });
        let what = match &step {
            Some(("canary", canary)) => format!("job {id} runs its canaries on {}", str(&canary["share"])),
            Some(("promote", _)) => format!("job {id} promoted its canaries"),
            Some(_) => format!("job {id} aborted its canaries"),
            None => format!("upgraded job {id}"),
        };
        // An abort by rollback goes back to the savepoint of the canary's start, as asked.
        let rolls_back = step.as_ref().is_some_and(|(field, value)| *field == "abort" && *value == "rollback");
        match step {
            // A canary's settings are fields of the request.
            Some(("canary", canary)) => {
                body["canary"] = canary["share"].clone();
                body["abort-if"] = canary["abort-if"].clone();
                if !canary["abort-by"].is_null() {
                    body["abort-by"] = canary["abort-by"].clone();
                }
            }
            Some((field, value)) => body[field] = value,
            None => {}
        }
        match trial {
            Trial::Only(sample) => (body["trial"], body["sample"]) = (Value::Bool(true), sample.into()),
            Trial::First(sample) => body["sample"] = sample.into(),
            Trial::Skip => body["no-trial"] = Value::Bool(true),
        }
        let body = body.to_string().into_bytes();
        let answer = self.call("POST", &format!("/v1/jobs/{id}/upgrade"), Some(("application/json", body)))?;
        if let Trial::Only(_) = trial {
            return self.print_trial(&answer);
        }
        let status = self.wait_for(&format!("/v1/jobs/{id}/upgrades/{}", str(&answer["request-id"])))?;
        if self.print_json(&status)? {
            return Ok(());
        }
        match str(&status["status"]) {
            "completed" => {
                println!("{what}: paused {:.1} ms", status["pause-ms"].as_f64().unwrap_or(0.0));
                println!("savepoint before the swap: {}", str(&status["savepoint"]));
                Ok(())
            }
            "rolled-back" if rolls_back => {
                println!("{what}: it runs from savepoint {} again", str(&status["savepoint"]));
                Ok(())
            }
            "rolled-back" => bail!(
                "the upgrade of job {id} was rolled back: the new module failed ({}); the job runs its previous \
                 modules again, from savepoint {}",
                str(&status["cause"]),
                str(&status["savepoint"])
            ),
            _ => bail!("the upgrade of job {id} failed: {}", str(&status["cause"])),
        }
    }

    /// Prints a trial's report; fails when the trial did.
    fn print_trial(&self, report: &Value) -> anyhow::Result<()> {
        if !self.print_json(report)? {
            println!("trial on the state of {}", str(&report["state-from"]));
            for op in report["operators"].as_array().into_iter().flatten() {
                let groups: Vec<String> =
                    op["key-groups"].as_array().into_iter().flatten().map(|g| g.to_string()).collect();
                println!("operator '{}': {}, key groups {}", str(&op["uid"]), str(&op["module"]), groups.join(", "));
                println!(
                    "  migrated {} of {} entries ({:.2} µs each to read, {:.2} µs to migrate)",
                    op["migrated"],
                    op["entries"],
                    op["read-us-per-entry"].as_f64().unwrap_or(0.0),
                    op["migrate-us-per-entry"].as_f64().unwrap_or(0.0)
                );
                println!(
                    "  projected: {} entries in all, a pause of {:.1} ms to migrate them; memory {:.1} MiB",
                    op["projected-entries"],
                    op["projected-pause-ms"].as_f64().unwrap_or(0.0),
                    op["memory-bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20)
                );
                let replayed = op["replayed"].as_array().cloned().unwrap_or_default();
                let differing = replayed.iter().filter(|r| r["old"] != r["new"]).count();
                println!(
                    "  replayed {} recent events through both modules: {differing} gave other output",
                    replayed.len()
                );
                for r in replayed.iter().take(3) {
                    let lines = |v: &Value| {
                        let lines: Vec<&str> = v.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        if lines.is_empty() { "(nothing)".to_string() } else { lines.join(" ") }
                    };
                    println!("    key '{}', event {}", str(&r["key"]), str(&r["event"]));
                    println!("      old: {}", lines(&r["old"]));
                    println!("      new: {}", lines(&r["new"]));
                    if let Some(error) = r["error"].as_str() {
                        println!("      FAILED: {error}");
                    }
                }
                for f in op["failures"].as_array().into_iter().flatten() {
                    println!(
                        "  FAILED: state '{}' of key '{}' ({}): {}",
                        str(&f["state"]),
                        str(&f["key"]),
                        str(&f["entry"]),
                        str(&f["error"])
                    );
                }
            }
        }
        if report["passed"] != Value::Bool(true) {
            bail!("the new modules failed their trial; the job runs on untouched");
        }
        Ok(())
    }

    pub(super) fn savepoints(&self) -> anyhow::Result<()> {
        let list = self.call("GET", "/v1/savepoints", None)?;
        if self.print_json(&list)? {
            return Ok(());
        }
        println!("{:<20} {:<24} {:<14} {:>10}  {:<40} PATH", "TAKEN (UTC)", "JOB", "WHY", "BYTES", "MODULES");
        for s in list["savepoints"].as_array().into_iter().flatten() {
            let modules: Vec<String> = s["operators"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|op| format!("{}={}", str(&op[0]), str(&op[1])))
                .collect();
            // Why it was taken, and "+fork" when jobs were forked from it.
            let forked = s["forks"].as_array().is_some_and(|f| !f.is_empty());
            let why = format!("{}{}", str(&s["reason"]), if forked { "+fork" } else { "" });
            println!(
                "{:<20} {:<24} {why:<14} {:>10}  {:<40} {}",
                time(&s["taken-at"]),
                str(&s["job-name"]),
                s["size"].to_string(),
                modules.join(" "),
                str(&s["location"])
            );
        }
        Ok(())
    }

    pub(super) fn cancel(&self, id: &str) -> anyhow::Result<()> {
        let job = self.call("POST", &format!("/v1/jobs/{id}/cancel"), None)?;
        if !self.print_json(&job)? {
            println!("canceling job {} '{}'", str(&job["id"]), str(&job["name"]));
        }
        Ok(())
    }
}

/// The error a server's answer of HTTP `status` states: its message, or the whole answer.
fn refusal(status: u16, answer: &Value) -> anyhow::Error {
    let message = answer["error"].as_str().map(str::to_string).unwrap_or_else(|| answer.to_string());
    anyhow::anyhow!("{message} (HTTP {status})")
}

/// The one of `matching` (id, how to show it), the ids that start with `given`; `what` and
/// `list` ("weir jobs") name them in errors.
fn one_of(given: &str, what: &str, list: &str, matching: Vec<(String, String)>) -> anyhow::Result<String> {
    if given.is_empty() {
        bail!("name a {what}: an empty id matches every one");
    }
    match matching.as_slice() {
        [(id, _)] => Ok(id.clone()),
        [] => bail!("no {what} with an id starting with {given} (`{list}` lists them)"),
        many => bail!(
            "{given} is the start of {} {what} ids; give more of it:\n  {}",
            many.len(),
            many.iter().map(|(_, label)| label.as_str()).collect::<Vec<_>>().join("\n  ")
        ),
    }
}

/// The `[[kind]]` tables of a job file.
fn tables<'a>(doc: &'a mut toml_edit::DocumentMut, kind: &str) -> impl Iterator<Item = &'a mut toml_edit::Table> {
    doc.get_mut(kind).and_then(toml_edit::Item::as_array_of_tables_mut).into_iter().flat_map(|a| a.iter_mut())
}

/// Sets string `key` of `table` to `value`, keeping the comment and spacing around the old one.
fn replace_string(table: &mut dyn toml_edit::TableLike, key: &str, value: String) {
    let Some(item) = table.get_mut(key) else { return };
    let decor = item.as_value().map(|v| v.decor().clone()).unwrap_or_default();
    let mut new = toml_edit::Value::from(value);
    *new.decor_mut() = decor;
    *item = toml_edit::Item::Value(new);
}

/// A savepoint path as the server should see it: URLs as they are, local paths made absolute.
fn local_or_url(path: &str) -> String {
    if path.contains("://") {
        return path.to_string();
    }
    std::path::absolute(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

/// Percent-encodes a query parameter's value.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn str(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn time(ms: &Value) -> String {
    ms.as_u64().map_or("-".to_string(), |ms| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string().replace('T', " ")
    })
}

/// What sources report of themselves beside their counts: a Kafka source's offset and lag per
/// partition, and its client's latest error.
/// What each module version of the operators running a canary served.
fn print_versions(job: &Value) {
    for v in job["vertices"].as_array().into_iter().flatten() {
        for version in v["versions"].as_array().into_iter().flatten() {
            println!(
                "operator '{}' {} {}: key groups {}..{}, events in {} out {} ({:.0}/s), busy {} ms, {} errors",
                str(&v["uid"]),
                str(&version["role"]),
                str(&version["module"]),
                version["key-groups"]["start"],
                version["key-groups"]["end"],
                version["events-in"],
                version["events-out"],
                version["events-out-per-second"].as_f64().unwrap_or(0.0),
                version["busy-ms"],
                version["errors"]
            );
        }
    }
}

/// Each vertex's watermark (the lowest of its subtasks', and each subtask's) and late events, for
/// the vertices that have either.
fn print_event_time(job: &Value) {
    let watermark = |w: &Value| match w.as_i64() {
        Some(i64::MAX) => "end of time".to_string(),
        Some(ms) => format!("{ms} ms"),
        None => "none yet".to_string(),
    };
    for v in job["vertices"].as_array().into_iter().flatten() {
        let late = v["late-events"].as_u64().unwrap_or(0);
        if v["watermark"].is_null() && late == 0 {
            continue;
        }
        let subtasks: Vec<String> =
            v["subtasks"].as_array().into_iter().flatten().map(|s| watermark(&s["watermark"])).collect();
        println!(
            "{} '{}': watermark {} (subtasks: {}), {late} late events",
            str(&v["kind"]),
            str(&v["uid"]),
            watermark(&v["watermark"]),
            subtasks.join(", ")
        );
    }
}

/// The operators that set events aside on their `quarantine` side output, and how many.
fn print_quarantined(job: &Value) {
    for v in job["vertices"].as_array().into_iter().flatten() {
        if let Some(n) = v["quarantined"].as_u64().filter(|n| *n > 0) {
            println!("operator '{}': {n} quarantined events (on its side output 'quarantine')", str(&v["uid"]));
        }
    }
}

fn print_connector_status(job: &Value) {
    for v in job["vertices"].as_array().into_iter().flatten() {
        for (i, s) in v["subtasks"].as_array().into_iter().flatten().enumerate() {
            let status = &s["status"];
            let partitions: Vec<String> = status["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let lag = p["lag"].as_u64().map_or("?".to_string(), |lag| lag.to_string());
                    format!("{}/{} offset {} lag {lag}", str(&p["topic"]), p["partition"], p["offset"])
                })
                .collect();
            if !partitions.is_empty() {
                println!("{} '{}' subtask {i}: {}", str(&v["kind"]), str(&v["uid"]), partitions.join(", "));
            }
            if let Some(error) = status["error"].as_str() {
                println!("{} '{}' subtask {i}: client error: {error}", str(&v["kind"]), str(&v["uid"]));
            }
        }
    }
}
