//! `weir savepoint inspect` and `weir savepoint dispose`: working on a savepoint directory
//! itself, without a server or a job (inspect is the read side of Flink's State Processor API).
use std::io::Write;
use std::path::Path;

use anyhow::bail;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::checkpoint::savepoint::SavepointLocation;
use crate::runtime::StoredState;
use crate::state::canonical as snapshot;
use crate::state::{StateDescriptor, StateEntry, StateItem, TIMERS_STATE, timer_of, ttl};

/// One line of `inspect`, its fields in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    operator: &'a str,
    state: &'a str,
    key: serde_json::Value,
    #[serde(rename = "map-key", skip_serializing_if = "Option::is_none")]
    map_key: Option<serde_json::Value>,
    /// The value, when it is JSON (what the SDKs store): as that JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<serde_json::Value>,
    /// A value that is no JSON, losslessly: a string when it is UTF-8, else `{"base64": "…"}`.
    #[serde(rename = "raw-value", skip_serializing_if = "Option::is_none")]
    raw_value: Option<serde_json::Value>,
    /// For a state with a time-to-live: when the entry expires (ms since the Unix epoch).
    #[serde(rename = "expires-at", skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// For an entry of the key groups a canary served: the canary's module, which saved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<&'a str>,
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "…"}`.
pub(super) fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// A stored value as `inspect` shows it: `value` when it is JSON, else `raw-value`.
pub(super) fn value_fields(bytes: &[u8]) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    match serde_json::from_slice(bytes) {
        Ok(json) => (Some(json), None),
        Err(_) => (None, Some(bytes_json(bytes))),
    }
}

/// Prints the state of the savepoint at `path` as JSON lines, one per value, map entry or list
/// element: `{"operator":…,"state":…,"key":…,"value":…}`, the value as the JSON it is, or as
/// `raw-value` when it is no JSON (map entries also have `map-key`; a pending timer's is
/// `{"timer":"event-time"|"processing-time","time":<ms>}`, with an empty `raw-value`; a broadcast
/// state's entries have `key` null).
pub(super) fn inspect(path: &str, operator: Option<&str>, state: Option<&str>) -> anyhow::Result<()> {
    let at = SavepointLocation::parse(path, Path::new(".")).map_err(anyhow::Error::msg)?;
    let metadata = at.metadata().map_err(anyhow::Error::msg)?;
    if let Some(uid) = operator.filter(|uid| !metadata.operators.iter().any(|op| op.uid == *uid)) {
        let known: Vec<&str> = metadata.operators.iter().map(|op| op.uid.as_str()).collect();
        bail!("the savepoint has no operator '{uid}' (it has: {})", known.join(", "));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for op in metadata.operators.iter().filter(|op| operator.is_none_or(|uid| op.uid == uid)) {
        if let Some(name) = state.filter(|name| operator.is_some() && !op.states.iter().any(|s| s.name == *name)) {
            bail!("operator '{}' has no state '{name}' in the savepoint", op.uid);
        }
        let canary_module = op.canary.as_ref().map(|c| c.module.to_string());
        if let Some(canary) = &op.canary {
            eprintln!(
                "operator '{}': key groups 0..{} served by the canary {}, the rest by {}",
                op.uid, canary.key_groups, canary.module, op.module
            );
        }
        for file in &op.files {
            let canary = file.canary.as_ref().and(canary_module.as_deref());
            // What the module that saved it declared (the canary's, for its files): a state's
            // time-to-live is recorded there, not in the state file.
            let declared = match (&file.canary, &op.canary) {
                (Some(_), Some(saved)) => &saved.states,
                _ => &op.states,
            };
            // Broadcast state, recorded once for the operator, has no key.
            for saved in file.broadcast.iter().flat_map(|b| &b.states) {
                if state.is_some_and(|wanted| wanted != saved.name) {
                    continue;
                }
                for [k, v] in &saved.entries {
                    let (k, v) = (hex::decode(k)?, hex::decode(v)?);
                    let (value, raw_value) = value_fields(&v);
                    let line = Line {
                        operator: &op.uid,
                        state: &saved.name,
                        key: serde_json::Value::Null,
                        map_key: Some(bytes_json(&k)),
                        value,
                        raw_value,
                        expires_at: None,
                        canary,
                    };
                    writeln!(out, "{}", serde_json::to_string(&line)?)?;
                }
            }
            let mut print = |states: &[StateDescriptor], entry: StateEntry<'_>| -> anyhow::Result<()> {
                let name = states.get(entry.state as usize).map_or("", |s| s.name.as_str());
                if state.is_some_and(|wanted| wanted != name) {
                    return Ok(());
                }
                let (map_key, value) = match entry.item {
                    StateItem::Value(v) | StateItem::ListElement(v) => (None, v),
                    // A timer's map key is its domain and time: shown as such.
                    StateItem::MapEntry(k, v) if name == TIMERS_STATE => match timer_of(k) {
                        Some((domain, time)) => (Some(serde_json::json!({ "timer": domain, "time": time })), v),
                        None => (Some(bytes_json(k)), v),
                    },
                    StateItem::MapEntry(k, v) => (Some(bytes_json(k)), v),
                };
                // A state with a time-to-live stores each entry's expiry before its bytes.
                let expiring = declared.iter().any(|s| s.name == name && s.time_to_live.is_some());
                let (value, expires_at) = match expiring {
                    true => (value.get(ttl::EXPIRY_BYTES..).unwrap_or_default(), ttl::expiry(value)),
                    false => (value, None),
                };
                let (value, raw_value) = value_fields(value);
                let line = Line {
                    operator: &op.uid,
                    state: name,
                    key: bytes_json(entry.key),
                    map_key,
                    value,
                    raw_value,
                    expires_at,
                    canary,
                };
                Ok(writeln!(out, "{}", serde_json::to_string(&line)?)?)
            };
            match &file.stored {
                StoredState::Canonical { file, sha256, .. } => {
                    let file_path = at.file(file);
                    let bytes = at.storage.get(&file_path)?;
                    if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                        bail!(
                            "{} does not match the checksum in _metadata (torn or changed)",
                            at.storage.display(&file_path)
                        );
                    }
                    let snapshot = snapshot::read(&bytes, &at.storage.display(&file_path))?;
                    for entry in snapshot.entries(0..u32::MAX) {
                        print(&snapshot.states, entry?)?;
                    }
                }
                StoredState::Native(native) => {
                    let dir = tempfile::tempdir()?;
                    at.fetch_native(native, dir.path()).map_err(anyhow::Error::msg)?;
                    let kinds: Vec<_> = native.states.iter().map(|s| s.kind).collect();
                    let mut printed = Ok(());
                    crate::state::scan_native(&native.native, dir.path(), &kinds, &mut |entry| {
                        if printed.is_ok() {
                            printed = print(&native.states, entry);
                        }
                    })
                    .map_err(anyhow::Error::msg)?;
                    printed?;
                }
            }
        }
    }
    Ok(out.flush()?)
}

/// Deletes the savepoint at `path` (see [`SavepointLocation::dispose`]) through the server's
/// rules: the server disposes of one of its library, refuses one that a job may still go back to,
/// and leaves any other to be deleted here. Without a server to ask, only with `force`.
pub(super) fn dispose(path: &str, force: bool, server: &super::client::Client) -> anyhow::Result<()> {
    let at = SavepointLocation::parse(path, Path::new(".")).map_err(anyhow::Error::msg)?;
    // The server knows a local savepoint by its absolute path.
    let location = match path.contains("://") {
        true => path.to_string(),
        false => std::fs::canonicalize(path).map_or_else(|_| at.display(), |p| p.display().to_string()),
    };
    if !force {
        match server.dispose_savepoint(&location) {
            Ok(true) => {
                eprintln!("disposed of savepoint {location} (through the server, which drops it from its library)");
                return Ok(());
            }
            Ok(false) => {}
            Err(e) if e.downcast_ref::<super::CliError>().is_some() => bail!(
                "{e:#}: it is needed to check that no job may still go back to savepoint {location}. Start it, \
                 point --server (or WEIR_SERVER) at the server that runs jobs from it, or pass --force if none does"
            ),
            Err(e) => return Err(e.context(format!("savepoint {location} was not disposed of"))),
        }
    }
    match at.dispose().map_err(anyhow::Error::msg)? {
        true => eprintln!("disposed of savepoint {}", at.display()),
        false => eprintln!("disposed of savepoint {} (the directory holds other files, which stay)", at.display()),
    }
    Ok(())
}
