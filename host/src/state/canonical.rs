//! The canonical snapshot file of one operator subtask's keyed state, the same whatever backend
//! wrote it (what checkpoints of the memory backend and every savepoint store): its declared states, then its entries
//! key group by key group, then a SHA-256 of everything before it. Grouping by key group lets a
//! restore at another parallelism take just the key groups a subtask now owns; the checksum makes
//! a torn or altered file an error that names the file, never silently wrong state.
//!
//! ```text
//! magic "WEIRSNP1"
//! u32 state count; per state: bytes name, u8 kind (0 value, 1 map, 2 list), u32 schema version
//! u32 key-group count; per key group, ascending:
//!     u16 key group, u64 entry count; per entry:
//!         u32 state index, bytes key, u8 item (0 value, 1 map entry, 2 list element),
//!         [bytes map key, for map entries], bytes value
//! 32 bytes SHA-256 of all the above
//! ```
//! Integers are little-endian; `bytes` is a u32 length and the bytes (as in the batch frames).
use std::ops::Range;

use sha2::{Digest, Sha256};
use weir_frame::{Reader, put_bytes, put_u32};

use super::snapshot::{Copied, SnapshotBody};
use super::{StateBackend, StateDescriptor, StateEntry, StateError, StateItem, StateKind};
use crate::key_group::KeyGroup;

const MAGIC: &[u8; 8] = b"WEIRSNP1";
const CHECKSUM_LEN: usize = 32;

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file is torn, truncated, altered or not a snapshot.
    #[error("snapshot file {file} is corrupt: {reason}")]
    Corrupt {
        /// The file at fault.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The state backend refused an entry.
    #[error("snapshot file {file}: {problem}")]
    State {
        /// The file being restored.
        file: String,
        /// Why (in the message, not a chained source, so that it is printed once).
        problem: StateError,
    },
}

fn kind_code(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::Map => 1,
        StateKind::List => 2,
        StateKind::Broadcast => 3,
    }
}

/// The synchronous part of a checkpoint of a backend that keeps its state in memory: a copy of
/// `key_groups` of `backend` in the snapshot format, without its checksum. [`seal`] adds that
/// later, off the processing thread (hashing tens of megabytes would take longer than copying
/// them).
pub fn copy(
    backend: &dyn StateBackend,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
) -> Result<Box<dyn SnapshotBody>, StateError> {
    Ok(Box::new(Copied(encode(backend, key_groups, states)?)))
}

/// `key_groups` of `backend` in the snapshot format, without its checksum.
pub(super) fn encode<B: Scan + ?Sized>(
    backend: &B,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::new();
    write_body(backend, key_groups, states, &mut out)?;
    Ok(out)
}

/// What the encoder reads entries from: a backend, or a checkpoint of one opened to be read.
pub(super) trait Scan {
    /// Visits every entry in `key_groups`, as [`StateBackend::scan`] does.
    fn scan_entries(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError>;
}

impl<B: StateBackend + ?Sized> Scan for B {
    fn scan_entries(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
        self.scan(key_groups, visit)
    }
}

/// Appends the SHA-256 trailer to an encoded snapshot, completing the file.
pub fn seal(bytes: &mut Vec<u8>) {
    let checksum = Sha256::digest(&bytes[..]);
    bytes.extend_from_slice(&checksum);
}

fn write_body<B: Scan + ?Sized>(
    backend: &B,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
    out: &mut Vec<u8>,
) -> Result<(), StateError> {
    out.extend_from_slice(MAGIC);
    put_u32(out, states.len() as u32);
    for s in states {
        put_bytes(out, s.name.as_bytes());
        out.push(kind_code(s.kind));
        put_u32(out, s.schema_version);
    }
    put_u32(out, key_groups.len() as u32);
    // Entries of states with a time-to-live that have expired are left out (they keep their
    // expiry in front of the operator's bytes, see `super::ttl`).
    let (expiring, now): (Vec<bool>, i64) =
        (states.iter().map(|s| s.time_to_live.is_some()).collect(), super::ttl::now_ms());
    for kg in key_groups {
        out.extend_from_slice(&(kg as KeyGroup).to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut count = 0u64;
        backend.scan_entries(kg..kg + 1, &mut |entry| {
            let stored = match entry.item {
                StateItem::Value(v) | StateItem::MapEntry(_, v) | StateItem::ListElement(v) => v,
            };
            if expiring.get(entry.state as usize) == Some(&true) && super::ttl::unwrap(stored, now).is_none() {
                return;
            }
            count += 1;
            put_u32(out, entry.state);
            put_bytes(out, entry.key);
            match entry.item {
                StateItem::Value(v) => {
                    out.push(0);
                    put_bytes(out, v);
                }
                StateItem::MapEntry(k, v) => {
                    out.push(1);
                    put_bytes(out, k);
                    put_bytes(out, v);
                }
                StateItem::ListElement(v) => {
                    out.push(2);
                    put_bytes(out, v);
                }
            }
        })?;
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    }
    Ok(())
}

/// A checked snapshot file.
pub struct Snapshot<'a> {
    file: String,
    /// The declared states it was written with.
    pub states: Vec<StateDescriptor>,
    /// Per key group: the key group, its entry count and its entries' bytes.
    key_groups: Vec<(KeyGroup, u64, &'a [u8])>,
}

/// Checks a snapshot file's checksum and structure; `file` names it in errors.
pub fn read<'a>(bytes: &'a [u8], file: &str) -> Result<Snapshot<'a>, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { file: file.to_string(), reason };
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("it does not start with the snapshot magic bytes".to_string()));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt("its checksum does not match its content (the file is torn or was changed)".to_string()));
    }
    let truncated = |t: weir_frame::Truncated| corrupt(t.to_string());
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let mut states = Vec::new();
    for _ in 0..r.u32().map_err(truncated)? {
        let name = String::from_utf8(r.bytes().map_err(truncated)?.to_vec())
            .map_err(|_| corrupt("a state name is not UTF-8".to_string()))?;
        let code = r.fixed(1).map_err(truncated)?[0];
        let kind = match code {
            0 => StateKind::Value,
            1 => StateKind::Map,
            2 => StateKind::List,
            3 => StateKind::Broadcast,
            other => return Err(corrupt(format!("state '{name}' has unknown kind {other}"))),
        };
        states.push(StateDescriptor::new(&name, kind, r.u32().map_err(truncated)?));
    }
    let mut key_groups = Vec::new();
    for _ in 0..r.u32().map_err(truncated)? {
        let kg = u16::from_le_bytes(r.fixed(2).map_err(truncated)?.try_into().unwrap_or_default());
        let count = u64::from_le_bytes(r.fixed(8).map_err(truncated)?.try_into().unwrap_or_default());
        let start = r.position();
        for _ in 0..count {
            read_entry(&mut r, kg, &states).map_err(&corrupt)?;
        }
        key_groups.push((kg, count, &body[MAGIC.len() + start..MAGIC.len() + r.position()]));
    }
    if !r.is_at_end() {
        return Err(corrupt("it has bytes after its last key group".to_string()));
    }
    Ok(Snapshot { file: file.to_string(), states, key_groups })
}

fn read_entry<'a>(
    r: &mut Reader<'a>,
    key_group: KeyGroup,
    states: &[StateDescriptor],
) -> Result<StateEntry<'a>, String> {
    let state = r.u32()?;
    let key = r.bytes()?;
    let item = match r.fixed(1)?[0] {
        0 => StateItem::Value(r.bytes()?),
        1 => StateItem::MapEntry(r.bytes()?, r.bytes()?),
        2 => StateItem::ListElement(r.bytes()?),
        other => return Err(format!("an entry has unknown item kind {other}")),
    };
    if state as usize >= states.len() {
        return Err(format!("an entry names state #{state}, but {} states are declared", states.len()));
    }
    Ok(StateEntry { key_group, state, key, item })
}

impl<'a> Snapshot<'a> {
    /// Its entries in the key groups of `range`, key group by key group. (Checked by `read`, so
    /// an error here means the bytes changed since.)
    pub fn entries(&self, range: Range<u32>) -> impl Iterator<Item = Result<StateEntry<'a>, SnapshotError>> + '_ {
        let wanted = self.key_groups.iter().filter(move |(kg, _, _)| range.contains(&u32::from(*kg)));
        wanted.flat_map(move |&(kg, count, bytes)| {
            let mut r = Reader::new(bytes);
            (0..count).map(move |_| {
                read_entry(&mut r, kg, &self.states)
                    .map_err(|reason| SnapshotError::Corrupt { file: self.file.clone(), reason })
            })
        })
    }

    /// The key groups it holds, ascending.
    pub fn key_groups(&self) -> impl Iterator<Item = KeyGroup> + '_ {
        self.key_groups.iter().map(|(kg, _, _)| *kg)
    }

    /// Inserts the entries of the key groups in `range` into `backend`, each entry of saved state
    /// i into the backend's state `to[i]` (entries of a state mapped to `None` are left out);
    /// returns how many were inserted.
    pub fn restore_into(
        &self,
        backend: &mut dyn StateBackend,
        range: Range<u32>,
        to: &[Option<u32>],
    ) -> Result<u64, SnapshotError> {
        let mut restored = 0;
        for entry in self.entries(range) {
            let entry = entry?;
            let Some(state) = to.get(entry.state as usize).copied().flatten() else { continue };
            let entry = StateEntry { state, ..entry };
            backend.insert(entry).map_err(|problem| SnapshotError::State { file: self.file.clone(), problem })?;
            restored += 1;
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryBackend;

    const STATES: [StateKind; 3] = [StateKind::Value, StateKind::Map, StateKind::List];
    /// Each saved state into the backend's state of the same index.
    const SAME: [Option<u32>; 3] = [Some(0), Some(1), Some(2)];

    /// A complete snapshot file of `key_groups` of `backend`.
    fn sealed(backend: &dyn StateBackend, key_groups: Range<u32>, states: &[StateDescriptor]) -> Vec<u8> {
        let mut bytes = encode(backend, key_groups, states).unwrap();
        seal(&mut bytes);
        bytes
    }

    fn declared() -> Vec<StateDescriptor> {
        ["count", "seen", "history"]
            .iter()
            .zip(STATES)
            .map(|(name, kind)| StateDescriptor::new(name, kind, 1))
            .collect()
    }

    fn filled() -> MemoryBackend {
        let mut b = MemoryBackend::new(0..8, &STATES);
        for kg in 0..8u16 {
            for k in 0..3 {
                let key = format!("key{kg}-{k}");
                b.value_put(0, kg, key.as_bytes(), format!("{kg}{k}").as_bytes()).unwrap();
                b.map_put(1, kg, key.as_bytes(), b"m", b"1").unwrap();
                b.list_append(2, kg, key.as_bytes(), b"a").unwrap();
                b.list_append(2, kg, key.as_bytes(), b"b").unwrap();
            }
        }
        b
    }

    fn entries(b: &dyn StateBackend, range: Range<u32>) -> Vec<String> {
        let mut all = Vec::new();
        b.scan(range, &mut |e| all.push(format!("{e:?}"))).unwrap();
        all.sort();
        all
    }

    #[test]
    fn round_trip_whole_and_by_key_group_range() {
        let source = filled();
        let bytes = sealed(&source, 0..8, &declared());
        let snapshot = read(&bytes, "op-0.state").unwrap();
        assert_eq!(snapshot.states, declared());
        assert_eq!(snapshot.key_groups().collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());

        let mut whole = MemoryBackend::new(0..8, &STATES);
        assert_eq!(snapshot.restore_into(&mut whole, 0..8, &SAME).unwrap(), 8 * 3 * 4);
        assert_eq!(entries(&whole, 0..8), entries(&source, 0..8));
        let mut list = Vec::new();
        whole.list_get(2, 5, b"key5-1", &mut |v| list.push(v.to_vec())).unwrap();
        assert_eq!(list, vec![b"a".to_vec(), b"b".to_vec()], "list order survives");

        // A rescaled subtask owning key groups 2..5 takes exactly those.
        let mut part = MemoryBackend::new(2..5, &STATES);
        assert_eq!(snapshot.restore_into(&mut part, 2..5, &SAME).unwrap(), 3 * 3 * 4);
        assert_eq!(entries(&part, 2..5), entries(&source, 2..5));
    }

    #[test]
    fn saved_states_go_where_they_are_mapped_or_are_left_out() {
        let source = filled();
        let bytes = sealed(&source, 0..8, &declared());
        let snapshot = read(&bytes, "op-0.state").unwrap();
        // A backend with only the list state, now at index 0.
        let mut only_list = MemoryBackend::new(0..8, &[StateKind::List]);
        assert_eq!(snapshot.restore_into(&mut only_list, 0..8, &[None, None, Some(0)]).unwrap(), 8 * 3 * 2);
        let mut list = Vec::new();
        only_list.list_get(0, 5, b"key5-1", &mut |v| list.push(v.to_vec())).unwrap();
        assert_eq!(list, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn empty_state_round_trips() {
        let bytes = sealed(&MemoryBackend::new(4..6, &STATES), 4..6, &declared());
        let snapshot = read(&bytes, "empty.state").unwrap();
        assert_eq!(snapshot.key_groups().collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(snapshot.restore_into(&mut MemoryBackend::new(4..6, &STATES), 4..6, &SAME).unwrap(), 0);
    }

    #[test]
    fn any_corruption_is_detected_and_names_the_file() {
        let bytes = sealed(&filled(), 0..8, &declared());
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            let err = read(&flipped, "chk-3/count-1.state").err().expect("corruption detected").to_string();
            assert!(err.starts_with("snapshot file chk-3/count-1.state is corrupt:"), "{err}");
        }
        let err = read(&bytes[..bytes.len() - 10], "torn.state").err().unwrap().to_string();
        assert!(err.contains("checksum does not match"), "{err}");
        assert!(read(b"short", "x").is_err());
    }
}
