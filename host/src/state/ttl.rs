//! State time-to-live (Flink's `StateTtlConfig` with its defaults: processing time, updated on
//! create and write, expired entries never returned). An entry of a state with a time-to-live is
//! stored as its expiry (milliseconds since the Unix epoch, little-endian `i64`) followed by the
//! operator's bytes: the host adds the expiry on every write and strips it on every read, so the
//! operator never sees it. Expired entries are neither read nor written to canonical snapshots,
//! and are deleted as the host sweeps its key groups.
use std::ops::Range;

use super::{StateBackend, StateError, StateItem};
use crate::key_group::KeyGroup;

/// Bytes of the expiry before the operator's bytes.
pub const EXPIRY_BYTES: usize = 8;

/// Processing time set by [`set_virtual_now`], if it was.
static VIRTUAL_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);

/// Processing time now: milliseconds since the Unix epoch (or the virtual time a replay set).
pub fn now_ms() -> i64 {
    match VIRTUAL_NOW.load(std::sync::atomic::Ordering::Relaxed) {
        i64::MIN => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
        }
        virtual_now => virtual_now,
    }
}

/// Makes processing time `ms` for the whole process, from now on: `weir replay` runs an operator
/// on a virtual clock, so that two replays print the same.
pub fn set_virtual_now(ms: i64) {
    VIRTUAL_NOW.store(ms.max(i64::MIN + 1), std::sync::atomic::Ordering::Relaxed);
}

/// `value` stored with a time-to-live of `ttl` ms from `now`, into `out` (cleared first).
pub fn wrap(ttl: u64, now: i64, value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&now.saturating_add(ttl.min(i64::MAX as u64) as i64).to_le_bytes());
    out.extend_from_slice(value);
}

/// The operator's bytes of a stored entry, unless it has expired at `now` (or is too short to
/// hold an expiry: stored without one, it cannot be trusted).
pub fn unwrap(stored: &[u8], now: i64) -> Option<&[u8]> {
    let (expiry, value) = stored.split_first_chunk::<EXPIRY_BYTES>()?;
    (i64::from_le_bytes(*expiry) > now).then_some(value)
}

/// The expiry of a stored entry.
pub fn expiry(stored: &[u8]) -> Option<i64> {
    stored.first_chunk::<EXPIRY_BYTES>().map(|e| i64::from_le_bytes(*e))
}

/// Deletes the entries in `key_groups` of the states with a time-to-live (`ttl`, per state index)
/// that have expired at `now`; returns how many. List elements expire one by one: a key's list
/// is rewritten with the ones left.
pub fn sweep(
    backend: &mut dyn StateBackend,
    ttl: &[Option<u64>],
    key_groups: Range<u32>,
    now: i64,
) -> Result<u64, StateError> {
    enum Expired {
        Value(u32, KeyGroup, Vec<u8>),
        MapEntry(u32, KeyGroup, Vec<u8>, Vec<u8>),
        List(u32, KeyGroup, Vec<u8>),
    }
    let mut expired = Vec::new();
    let with_ttl = (0..ttl.len() as u32).filter(|&state| ttl[state as usize].is_some());
    for state in with_ttl {
        backend.scan_state(state, key_groups.clone(), &mut |entry| {
            let (kg, key) = (entry.key_group, entry.key.to_vec());
            match entry.item {
                StateItem::Value(v) if unwrap(v, now).is_none() => expired.push(Expired::Value(state, kg, key)),
                StateItem::MapEntry(k, v) if unwrap(v, now).is_none() => {
                    expired.push(Expired::MapEntry(state, kg, key, k.to_vec()))
                }
                // One rewrite per list, however many of its elements expired.
                StateItem::ListElement(v) if unwrap(v, now).is_none() => {
                    let listed =
                        matches!(expired.last(), Some(Expired::List(s, g, k)) if (*s, *g, k) == (state, kg, &key));
                    if !listed {
                        expired.push(Expired::List(state, kg, key));
                    }
                }
                _ => {}
            }
        })?;
    }
    let mut deleted = 0;
    for entry in expired {
        deleted += 1;
        match entry {
            Expired::Value(state, kg, key) => backend.clear(state, kg, &key)?,
            Expired::MapEntry(state, kg, key, map_key) => backend.map_remove(state, kg, &key, &map_key)?,
            Expired::List(state, kg, key) => {
                let mut kept = Vec::new();
                backend.list_get(state, kg, &key, &mut |v| {
                    if unwrap(v, now).is_some() {
                        kept.push(v.to_vec());
                    }
                })?;
                backend.clear(state, kg, &key)?;
                for v in kept {
                    backend.list_append(state, kg, &key, &v)?;
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryBackend, StateKind};

    #[test]
    fn wrapped_values_read_back_until_they_expire() {
        let mut out = Vec::new();
        wrap(500, 1_000, b"v", &mut out);
        assert_eq!(expiry(&out), Some(1_500));
        assert_eq!(unwrap(&out, 1_499), Some(&b"v"[..]));
        assert_eq!(unwrap(&out, 1_500), None);
        assert_eq!(unwrap(b"short", 0), None);
    }

    #[test]
    fn a_sweep_deletes_expired_values_map_entries_and_list_elements_only() {
        let kinds = [StateKind::Value, StateKind::Map, StateKind::List, StateKind::Value];
        let mut backend = MemoryBackend::new(0..2, &kinds);
        let (mut old, mut new) = (Vec::new(), Vec::new());
        wrap(10, 0, b"old", &mut old);
        wrap(10, 1_000, b"new", &mut new);
        backend.value_put(0, 0, b"a", &old).unwrap();
        backend.value_put(0, 1, b"b", &new).unwrap();
        backend.map_put(1, 0, b"a", b"m1", &old).unwrap();
        backend.map_put(1, 0, b"a", b"m2", &new).unwrap();
        backend.list_append(2, 1, b"c", &old).unwrap();
        backend.list_append(2, 1, b"c", &new).unwrap();
        backend.list_append(2, 1, b"c", &old).unwrap();
        backend.value_put(3, 0, b"a", b"no time-to-live").unwrap();
        let ttl = [Some(10), Some(10), Some(10), None];
        assert_eq!(sweep(&mut backend, &ttl, 0..2, 500).unwrap(), 3);
        let mut out = Vec::new();
        assert!(!backend.value_get(0, 0, b"a", &mut out).unwrap());
        assert!(backend.value_get(0, 1, b"b", &mut out).unwrap());
        let mut entries = Vec::new();
        backend.map_entries(1, 0, b"a", &mut |k, _| entries.push(k.to_vec())).unwrap();
        assert_eq!(entries, [b"m2".to_vec()]);
        let mut list = Vec::new();
        backend.list_get(2, 1, b"c", &mut |v| list.push(unwrap(v, 500).map(<[u8]>::to_vec))).unwrap();
        assert_eq!(list, [Some(b"new".to_vec())]);
        assert!(backend.value_get(3, 0, b"a", &mut out).unwrap(), "states without a time-to-live are left alone");
    }
}
