//! `weir shadow`: a new module beside a running operator, on its live input and state, its
//! output compared with the live output and never sent on.
use anyhow::Context;
use serde_json::Value;

use super::client::{Client, str};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct ShadowArgs {
    #[command(subcommand)]
    action: Option<ShadowAction>,
    /// The running job.
    job_id: Option<String>,
    /// UID=MODULE: the operator and the module to run beside it, a .wasm file (uploaded first)
    /// or sha256:<hex> of an uploaded one. Repeat for several operators.
    #[arg(long = "operator", value_name = "UID=MODULE", required_unless_present = "stop")]
    operators: Vec<String>,
    /// A top-level field of JSON output lines to leave out of the comparison (one the new module
    /// adds on purpose). Repeatable.
    #[arg(long, value_name = "FIELD", conflicts_with = "stop")]
    ignore: Vec<String>,
    /// The memory the shadow may cost before it stops (its writes, the live operator's writes
    /// kept apart meanwhile, its instance); the job goes on either way.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", conflicts_with = "stop")]
    memory_limit: String,
    /// A condition that stops the shadow by itself as soon as it holds: MEASURE>NUMBER, MEASURE
    /// one of differing, missing, extra, different (all three), different-ratio (their share of
    /// the lines compared). Repeatable.
    #[arg(long, value_name = "CONDITION", conflicts_with = "stop")]
    abort_if: Vec<String>,
    /// Stop the job's shadow runs and print what they found.
    #[arg(long, conflicts_with = "operators")]
    stop: bool,
}

#[derive(clap::Subcommand)]
enum ShadowAction {
    /// Print what a job's shadow runs found so far.
    Status {
        /// The job.
        job_id: String,
    },
}

pub(super) fn shadow(args: &ShadowArgs, client: &Client) -> anyhow::Result<()> {
    let (id, path) = match (&args.action, &args.job_id) {
        (Some(ShadowAction::Status { job_id }), _) => {
            let id = client.job_id(job_id)?;
            let answer = client.call("GET", &format!("/v1/jobs/{id}/shadow"), None)?;
            return print(client, &answer);
        }
        (None, Some(job_id)) => {
            let id = client.job_id(job_id)?;
            let path = format!("/v1/jobs/{id}/shadow");
            (id, path)
        }
        (None, None) => anyhow::bail!("name a running job: weir shadow JOB --operator UID=MODULE"),
    };
    if args.stop {
        let answer = client.call("DELETE", &path, None)?;
        return print(client, &answer);
    }
    let limit: bytesize::ByteSize = args
        .memory_limit
        .parse()
        .map_err(|_| anyhow::anyhow!("--memory-limit {}: not a size (for example 64MiB)", args.memory_limit))?;
    let body = serde_json::json!({
        "operators": client.module_references(&args.operators)?,
        "ignore": args.ignore,
        "memory-limit": limit.as_u64(),
        "abort-if": args.abort_if,
    });
    let answer = client
        .call("POST", &path, Some(("application/json", body.to_string().into_bytes())))
        .with_context(|| format!("shadowing job {id}"))?;
    print(client, &answer)
}

/// Prints a job's shadow reports.
fn print(client: &Client, answer: &Value) -> anyhow::Result<()> {
    if client.print_json(answer)? {
        return Ok(());
    }
    let reports = answer["shadows"].as_array().cloned().unwrap_or_default();
    if reports.is_empty() {
        println!("no shadow runs");
    }
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / f64::from(1 << 20);
    for r in &reports {
        println!(
            "operator '{}': shadow {}, {} ({} subtasks joined, {} calls compared)",
            str(&r["uid"]),
            str(&r["module"]),
            str(&r["status"]),
            r["subtasks"],
            r["calls"]
        );
        if let Some(why) = r["stopped-because"].as_str() {
            println!("  stopped: {why}");
        }
        let ignored: Vec<&str> = r["ignore"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let ignoring = if ignored.is_empty() { String::new() } else { format!(" (ignoring {})", ignored.join(", ")) };
        println!(
            "  lines: {} equal, {} differing, {} missing, {} extra{ignoring}",
            r["equal"], r["differing"], r["missing"], r["extra"]
        );
        println!(
            "  memory: {:.1} MiB of its {:.0} MiB limit (at most {:.1} MiB)",
            mib(&r["memory-bytes"]),
            mib(&r["memory-limit"]),
            mib(&r["largest-memory-bytes"])
        );
        for d in r["differences"].as_array().into_iter().flatten().take(10) {
            let line = |v: &Value| v.as_str().unwrap_or("(nothing)").to_string();
            let key = str(&d["key"]);
            let at = if key.is_empty() {
                str(&d["output"]).to_string()
            } else {
                format!("{} key '{key}'", str(&d["output"]))
            };
            println!("  {at}: live {}  shadow {}", line(&d["live"]), line(&d["shadow"]));
        }
    }
    Ok(())
}
