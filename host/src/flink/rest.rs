//! Flink's REST API, as `weir flink` uses it: upload the runner's jar, run it with a plan, list,
//! cancel, take savepoints and stop jobs (<https://nightlies.apache.org/flink/flink-docs-release-2.0/docs/ops/rest_api/>).
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What a Java stack trace says went wrong: its first line and every `Caused by:` line (Flink's
/// REST errors are whole traces, the cause at the bottom).
fn causes(trace: &str) -> String {
    let first = trace.lines().next().unwrap_or_default();
    let caused = trace.lines().filter(|l| l.starts_with("Caused by: ")).map(|l| format!("\n  {l}"));
    std::iter::once(first.to_string()).chain(caused).collect()
}

/// A connection to a JobManager's REST endpoint.
pub struct JobManager {
    url: String,
    agent: ureq::Agent,
}

/// A job as `GET /jobs/overview` lists it.
#[derive(Debug)]
pub struct FlinkJob {
    /// Its Flink job id.
    pub id: String,
    /// Its name (the job file's).
    pub name: String,
    /// RUNNING, FINISHED, CANCELED, FAILED…
    pub state: String,
    /// Start time, milliseconds since the Unix epoch.
    pub start_time: i64,
}

impl JobManager {
    /// The JobManager answering at `url`.
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        JobManager { url: url.trim_end_matches('/').to_string(), agent }
    }

    /// Sends a request; the answer's JSON, or an error naming the JobManager and Flink's message.
    fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Content-Type", content_type)
            .body(body)
            .map_err(|e| format!("cannot build the request to {url}: {e}"))?;
        let response = self.agent.run(request).map_err(|e| {
            format!(
                "cannot reach Flink's JobManager at {}: {e}; is a cluster running there? (`weir flink cluster start` \
                 starts one on this machine)",
                self.url
            )
        })?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().map_err(|e| format!("reading {url}: {e}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            let errors = value["errors"]
                .as_array()
                .map(|e| e.iter().map(|m| causes(m.as_str().unwrap_or_default())).collect::<Vec<_>>().join("; "));
            return Err(format!(
                "Flink answered {method} {path} with {status}: {}",
                errors.unwrap_or(value.to_string())
            ));
        }
        Ok(value)
    }

    fn json(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        self.call(method, path, "application/json", body.to_string().into_bytes())
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        self.call("GET", path, "application/json", Vec::new())
    }

    /// The cluster's overview (`GET /overview`): TaskManagers, slots, jobs.
    pub fn overview(&self) -> Result<Value, String> {
        self.get("/overview")
    }

    /// Checks that the JobManager answers; its Flink version.
    pub fn version(&self) -> Result<String, String> {
        Ok(self.get("/config")?["flink-version"].as_str().unwrap_or("unknown").to_string())
    }

    /// The id of `jar` on the JobManager, uploaded unless a jar of its name already is.
    pub fn upload(&self, jar: &Path) -> Result<String, String> {
        let name = jar.file_name().and_then(|n| n.to_str()).unwrap_or("weir-flink-runner.jar");
        let listed = self.get("/jars")?;
        let known = listed["files"].as_array().into_iter().flatten().find(|f| f["name"].as_str() == Some(name));
        if let Some(id) = known.and_then(|f| f["id"].as_str()) {
            return Ok(id.to_string());
        }
        let bytes = std::fs::read(jar).map_err(|e| format!("cannot read {}: {e}", jar.display()))?;
        let boundary = "weir-flink-runner-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; filename=\"{name}\"\r\n\
             Content-Type: application/x-java-archive\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let answer = self.call("POST", "/jars/upload", &format!("multipart/form-data; boundary={boundary}"), body)?;
        let file = answer["filename"].as_str().ok_or("Flink's jar upload answered without a file name")?;
        Ok(Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or(file).to_string())
    }

    /// Runs the runner of the uploaded jar `jar_id` with `plan` (from `savepoint`, a Flink one,
    /// when given); the new job's id.
    pub fn run_plan(
        &self,
        jar_id: &str,
        plan: &Value,
        savepoint: Option<&str>,
        allow_non_restored_state: bool,
    ) -> Result<String, String> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(plan.to_string());
        let mut body = json!({ "entryClass": super::runner::ENTRY_CLASS, "programArgsList": [encoded] });
        if let Some(savepoint) = savepoint {
            body["savepointPath"] = json!(savepoint);
            body["allowNonRestoredState"] = json!(allow_non_restored_state);
        }
        let answer = self.json("POST", &format!("/jars/{jar_id}/run"), body)?;
        answer["jobid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("Flink ran the jar but named no job: {answer}"))
    }

    /// Every job the JobManager knows, newest first.
    pub fn jobs(&self) -> Result<Vec<FlinkJob>, String> {
        let answer = self.get("/jobs/overview")?;
        let mut jobs: Vec<FlinkJob> = answer["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|j| FlinkJob {
                id: j["jid"].as_str().unwrap_or_default().to_string(),
                name: j["name"].as_str().unwrap_or_default().to_string(),
                state: j["state"].as_str().unwrap_or_default().to_string(),
                start_time: j["start-time"].as_i64().unwrap_or_default(),
            })
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
        Ok(jobs)
    }

    /// A job's details (`GET /jobs/:id`).
    pub fn job(&self, id: &str) -> Result<Value, String> {
        self.get(&format!("/jobs/{id}"))
    }

    /// Cancels job `id` (no savepoint).
    pub fn cancel(&self, id: &str) -> Result<(), String> {
        self.call("PATCH", &format!("/jobs/{id}?mode=cancel"), "application/json", Vec::new()).map(drop)
    }

    /// Job `id`'s failures (`GET /jobs/:id/exceptions`).
    pub fn exceptions(&self, id: &str) -> Result<Value, String> {
        self.get(&format!("/jobs/{id}/exceptions"))
    }

    /// The id of job `id`'s latest checkpoint or savepoint, triggered or completed (0: none yet).
    pub fn latest_checkpoint_id(&self, id: &str) -> Result<u64, String> {
        let checkpoints = self.get(&format!("/jobs/{id}/checkpoints"))?;
        let history = checkpoints["history"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_u64());
        Ok(history.max().unwrap_or(0).max(checkpoints["latest"]["completed"]["id"].as_u64().unwrap_or(0)))
    }

    /// The id of job `id`'s latest completed checkpoint (0: none yet).
    pub fn latest_completed_checkpoint_id(&self, id: &str) -> Result<u64, String> {
        let checkpoints = self.get(&format!("/jobs/{id}/checkpoints"))?;
        Ok(checkpoints["latest"]["completed"]["id"].as_u64().unwrap_or(0))
    }

    /// The checkpoint id of job `id`'s savepoint at `location`, from its checkpoint history.
    /// (The statistics of a job that just finished may take a moment to list it.)
    pub fn savepoint_id(&self, id: &str, location: &str) -> Result<u64, String> {
        let started = Instant::now();
        loop {
            let checkpoints = self.get(&format!("/jobs/{id}/checkpoints"))?;
            let history = checkpoints["history"].as_array().into_iter().flatten();
            let latest = std::iter::once(&checkpoints["latest"]["savepoint"]);
            let found = latest.chain(history).find(|c| c["external_path"].as_str() == Some(location));
            if let Some(id) = found.and_then(|c| c["id"].as_u64()) {
                return Ok(id);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("Flink's checkpoint history of job {id} does not list the savepoint {location}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Takes a canonical savepoint of job `id` into `dir` (the cluster's default when `None`);
    /// with `stop`, stops the job with it. Its location once complete.
    pub fn savepoint(&self, id: &str, dir: Option<&str>, stop: bool) -> Result<String, String> {
        let answer = if stop {
            let mut body = json!({ "drain": false, "formatType": "CANONICAL" });
            if let Some(dir) = dir {
                body["targetDirectory"] = json!(dir);
            }
            self.json("POST", &format!("/jobs/{id}/stop"), body)?
        } else {
            let mut body = json!({ "cancel-job": false, "formatType": "CANONICAL" });
            if let Some(dir) = dir {
                body["target-directory"] = json!(dir);
            }
            self.json("POST", &format!("/jobs/{id}/savepoints"), body)?
        };
        let request =
            answer["request-id"].as_str().ok_or_else(|| format!("Flink named no savepoint request: {answer}"))?;
        let started = Instant::now();
        loop {
            let status = self.get(&format!("/jobs/{id}/savepoints/{request}"))?;
            if status["status"]["id"].as_str() == Some("COMPLETED") {
                let operation = &status["operation"];
                if let Some(location) = operation["location"].as_str() {
                    return Ok(location.to_string());
                }
                let cause = operation["failure-cause"]["stack-trace"].as_str().unwrap_or_default();
                let first = cause.lines().take(3).collect::<Vec<_>>().join(" / ");
                return Err(format!("Flink's savepoint of job {id} failed: {first}"));
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("Flink's savepoint of job {id} did not complete within 10 minutes"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
