//! `weir check`: a module checked against its contract, and run beside a reference over the
//! same generated events, as an operator author in any language would.
use weir_e2e::{operator, weir};

fn check(args: &[&str]) -> weir_e2e::Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    weir(&all)
}

fn path(module: &str) -> String {
    operator(module).to_string_lossy().into_owned()
}

#[test]
fn the_count_in_every_language_matches_the_native_keyed_count() {
    // The SDKs build against the newest contract; the C example against 0.3.0, still served.
    for (module, contract) in [("count", "0.4.0"), ("count_py", "0.4.0"), ("count_js", "0.4.0"), ("count_c", "0.3.0")] {
        let checked = check(&[&path(module), "--like", "builtin:keyed-count"]);
        assert_eq!(checked.code, 0, "{module}: {}", checked.stderr);
        assert!(
            checked.stdout.contains(&format!(
                "count 1.0.0, built against weir:operator@{contract} (served), states: count (value state, schema \
                 version 1)"
            )),
            "{module}: {}",
            checked.stdout
        );
        assert!(
            checked.stdout.contains("same output as builtin:keyed-count: 5000 lines from 5000 events over 100 keys"),
            "{module}: {}",
            checked.stdout
        );
    }
    // Two modules, more events and keys.
    for module in ["count_js", "count_c"] {
        let checked = check(&[&path(module), "--like", &path("count"), "--events", "20000", "--keys", "3000"]);
        assert_eq!(checked.code, 0, "{module}: {}", checked.stderr);
        assert!(checked.stdout.contains("20000 lines from 20000 events over 3000 keys"), "{}", checked.stdout);
    }
}

#[test]
fn a_module_that_loses_state_across_batches_is_found() {
    let checked = check(&[&path("test/forgetful"), "--like", "builtin:keyed-count"]);
    assert_eq!(checked.code, 1, "{}", checked.stdout);
    // The first batch is right, the first event of the second is not.
    let line: u64 = checked
        .stderr
        .split("the outputs differ at line ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line named: {}", checked.stderr));
    assert!(line > 100, "line {line}: {}", checked.stderr);
    assert!(checked.stderr.contains("builtin:keyed-count: {\"key\":"), "{}", checked.stderr);
    // A module with other output: its first line already differs.
    let checked = check(&[&path("count_v2"), "--like", &path("count")]);
    assert_eq!(checked.code, 1, "{}", checked.stdout);
    assert!(checked.stderr.contains("the outputs differ at line 1 of 5000 events"), "{}", checked.stderr);
    assert!(checked.stderr.contains(r#"{"key":"k0","count":1,"v":2}"#), "{}", checked.stderr);
}

#[test]
fn what_is_not_a_usable_module_is_named() {
    let old = check(&[&path("test/count-0.2.0")]);
    assert_eq!(old.code, 0, "{}", old.stderr);
    assert!(old.stdout.contains("built against weir:operator@0.2.0 (served)"), "{}", old.stdout);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("count.js");
    std::fs::write(&text, "export const operator = {};").unwrap();
    let refused = check(&[&text.to_string_lossy()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("count.js") && refused.stderr.contains("not a WebAssembly"), "{}", refused.stderr);
    // A core module, and a component that exports nothing (an empty one: the world not
    // embedded): each refusal says how to make one that works.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let refused = check(&[&core.to_string_lossy()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("`wasm-tools component embed wit --world operator-world"), "{}", refused.stderr);
    assert!(refused.stderr.contains("`wasm-component-ld --component-type`"), "{}", refused.stderr);
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let refused = check(&[&empty.to_string_lossy()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("is not a weir operator: it exports nothing, as a component made of a core module"),
        "{}",
        refused.stderr
    );
    let missing = check(&[&path("count"), "--like", "/nowhere/reference.wasm"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("module /nowhere/reference.wasm cannot be read"), "{}", missing.stderr);
    let config = check(&[&path("count"), "--like", "builtin:keyed-count", "--config", "[1]"]);
    assert_eq!(config.code, 1);
    assert!(config.stderr.contains("--config [1] is not a JSON object"), "{}", config.stderr);
}

/// Operators with event-time windows and timers compare too, over generated events with
/// timestamps and watermarks: the window count in Python and JavaScript against Rust's.
#[test]
fn window_operators_compare_over_event_time() {
    for module in ["window_count_py", "window_count_js"] {
        let (checked, reference) = (path(module), path("window_count"));
        let config = r#"{"size":"1s"}"#;
        let checked = check(&[
            checked.as_str(),
            "--like",
            &reference,
            "--config",
            config,
            "--event-time-step",
            "1ms",
            "--events",
            "5000",
            "--keys",
            "10",
        ]);
        assert_eq!(checked.code, 0, "{module}: {}", checked.stderr);
        // 5 seconds of event time: five 1 s windows for each of the 10 keys.
        let said = format!("same output as {reference}: 50 lines from 5000 events over 10 keys");
        assert!(checked.stdout.contains(&said), "{}", checked.stdout);
    }
}
