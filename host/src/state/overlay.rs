//! A backend frozen at a barrier, and the overlay an operator goes on writing to meanwhile: how
//! a snapshot is taken without copying the state on the processing thread.
//!
//! [`freeze`] turns a backend into a shared, read-only base and returns an [`OverlayBackend`]
//! over it. The base is encoded into a snapshot file elsewhere (on the uploader thread) while the
//! operator reads through the overlay and writes into its delta: a small backend of its own, plus
//! what hides entries of the base (cleared keys, removed map entries, dropped key groups). Once
//! the snapshot no longer holds the base, [`OverlayBackend::settled`] folds the delta into it and
//! hands back the plain backend, so the overlay's extra lookups last only as long as the upload.
//!
//! Used at the stop of a handover, and at every checkpoint of a memory backend too large to copy
//! quickly (see [`super::checkpoint`]). The copy this saves is the whole state (30 ms for
//! 1,000,000 keys, 350 ms with a timer each); the price is paid by the writes of those few
//! hundred milliseconds, twice (delta, then fold), and by reads of keys not yet written, which
//! look in the delta first.
//!
//! (About 410 lines, a quarter of them its tests: a randomized comparison with a plain backend.)
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use super::{
    MemoryBackend, SnapshotBody, StateBackend, StateDescriptor, StateEntry, StateError, StateItem, StateKind,
    move_key_groups,
};
use crate::key_group::KeyGroup;

/// A backend no one writes to any more, shared by a snapshot being encoded and an overlay.
type FrozenState = Arc<Box<dyn StateBackend>>;

/// What a hidden key or removed map entry costs in the overlay, about, beyond its key bytes.
const HIDDEN_BYTES: usize = 64;

/// (state, key group, key).
type Key = (u32, KeyGroup, Box<[u8]>);
/// (state, key group, key, map key).
type MapEntryKey = (u32, KeyGroup, Box<[u8]>, Box<[u8]>);

/// Freezes `backend`, which holds `key_groups` of `states`: returns the snapshot of the frozen
/// state, to be encoded on the uploader thread, and the overlay the operator goes on with.
pub fn freeze(
    backend: Box<dyn StateBackend>,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
) -> (Box<dyn SnapshotBody>, Box<dyn StateBackend>) {
    let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
    let (base, overlay) = freeze_base(backend, key_groups.clone(), &kinds);
    (Box::new(Frozen { base, key_groups, states: states.to_vec() }), Box::new(overlay))
}

/// Forks `backend`, which holds `key_groups` of states `kinds`, into two overlays over it frozen:
/// the one the operator goes on with, and a shadow's (see [`crate::runtime::shadow`]), each
/// writing apart from the other. The operator's settles (folds its writes into the base) once the
/// shadow's is dropped and no snapshot reads the base.
pub fn fork(
    backend: Box<dyn StateBackend>,
    key_groups: Range<u32>,
    kinds: &[StateKind],
) -> (Box<dyn StateBackend>, Box<dyn StateBackend>) {
    let (base, live) = freeze_base(backend, key_groups.clone(), kinds);
    let shadow = OverlayBackend::over(base, key_groups, kinds);
    (Box::new(live), Box::new(shadow))
}

/// The frozen base of [`freeze`], and the overlay over it.
fn freeze_base(
    backend: Box<dyn StateBackend>,
    key_groups: Range<u32>,
    kinds: &[StateKind],
) -> (FrozenState, OverlayBackend) {
    let base: FrozenState = Arc::new(backend);
    let overlay = OverlayBackend::over(base.clone(), key_groups, kinds);
    (base, overlay)
}

/// The snapshot of a frozen backend: encoded in the canonical form on the uploader thread.
struct Frozen {
    base: FrozenState,
    key_groups: Range<u32>,
    states: Vec<StateDescriptor>,
}

impl SnapshotBody for Frozen {
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError> {
        super::canonical::encode(&**self.base, self.key_groups, &self.states)
    }
}

/// Reads the frozen base through a delta of the writes made since. See the module docs.
pub struct OverlayBackend {
    key_groups: Range<u32>,
    /// `None` only once [`OverlayBackend::settled`] has taken it.
    base: Option<FrozenState>,
    /// Everything written since the freeze.
    delta: MemoryBackend,
    /// Keys cleared since: their base entries are gone.
    hidden: HashSet<Key>,
    /// Map entries removed since: (state, key group, key, map key).
    removed: HashSet<MapEntryKey>,
    /// Key groups dropped since.
    dropped: Vec<Range<u32>>,
}

impl OverlayBackend {
    /// An overlay with nothing written yet over `base`, which holds `key_groups` of states `kinds`.
    fn over(base: FrozenState, key_groups: Range<u32>, kinds: &[StateKind]) -> Self {
        OverlayBackend {
            key_groups: key_groups.clone(),
            base: Some(base),
            delta: MemoryBackend::new(key_groups, kinds),
            hidden: HashSet::new(),
            removed: HashSet::new(),
            dropped: Vec::new(),
        }
    }

    fn base(&self) -> &dyn StateBackend {
        match &self.base {
            Some(base) => &***base,
            None => unreachable!("an overlay is not used after it settled"),
        }
    }

    /// Whether the base's entries of `key` in state `state` are hidden.
    fn is_hidden(&self, state: u32, kg: KeyGroup, key: &[u8]) -> bool {
        self.dropped.iter().any(|r| r.contains(&u32::from(kg)))
            || (!self.hidden.is_empty() && self.hidden.contains(&(state, kg, Box::from(key))))
    }

    fn is_removed(&self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> bool {
        !self.removed.is_empty() && self.removed.contains(&(state, kg, Box::from(key), Box::from(map_key)))
    }

    /// The merged map of `key`: the base's entries not hidden, removed or written since, then
    /// the delta's.
    fn merged_map(&self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateError> {
        let mut map = BTreeMap::new();
        if !self.is_hidden(state, kg, key) {
            self.base().map_entries(state, kg, key, &mut |k, v| {
                if !self.is_removed(state, kg, key, k) {
                    map.insert(k.to_vec(), v.to_vec());
                }
            })?;
        }
        self.delta.map_entries(state, kg, key, &mut |k, v| {
            map.insert(k.to_vec(), v.to_vec());
        })?;
        Ok(map)
    }

    /// The plain backend again, once no snapshot holds the base: the delta folded into it.
    /// `None` while a snapshot still reads it.
    pub fn settled(&mut self) -> Result<Option<Box<dyn StateBackend>>, StateError> {
        let Some(base) = self.base.take() else { return Ok(None) };
        let mut base = match Arc::try_unwrap(base) {
            Ok(base) => base,
            Err(shared) => {
                self.base = Some(shared);
                return Ok(None);
            }
        };
        let started = std::time::Instant::now();
        for range in &self.dropped {
            base.drop_key_groups(range.clone())?;
        }
        for (state, kg, key) in &self.hidden {
            base.clear(*state, *kg, key)?;
        }
        for (state, kg, key, map_key) in &self.removed {
            base.map_remove(*state, *kg, key, map_key)?;
        }
        move_key_groups(&mut self.delta, &mut *base, self.key_groups.clone())?;
        tracing::debug!("the snapshot let go of the frozen state; folded the writes since in {:?}", started.elapsed());
        Ok(Some(base))
    }
}

impl StateBackend for OverlayBackend {
    fn value_get(&self, state: u32, kg: KeyGroup, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        if self.delta.value_get(state, kg, key, out)? {
            return Ok(true);
        }
        if self.is_hidden(state, kg, key) {
            return Ok(false);
        }
        self.base().value_get(state, kg, key, out)
    }

    fn value_put(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.delta.value_put(state, kg, key, value)
    }

    /// The delta's slot, and the base's while the delta holds a small part of the state: once
    /// the keys in use have been written since the freeze (a long shadow run), reads find them in
    /// the delta and a second prefetch would only cost.
    fn value_prefetch(&self, state: u32, kg: KeyGroup, key: &[u8]) {
        self.delta.value_prefetch(state, kg, key);
        let delta = self.delta.approximate_bytes().unwrap_or(0);
        if self.base().approximate_bytes().is_none_or(|base| delta < base / 2) {
            self.base().value_prefetch(state, kg, key);
        }
    }

    fn map_get(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        if self.delta.map_get(state, kg, key, map_key, out)? {
            return Ok(true);
        }
        if self.is_hidden(state, kg, key) || self.is_removed(state, kg, key, map_key) {
            return Ok(false);
        }
        self.base().map_get(state, kg, key, map_key, out)
    }

    fn map_put(
        &mut self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        self.delta.map_put(state, kg, key, map_key, value)?;
        if !self.removed.is_empty() {
            self.removed.remove(&(state, kg, Box::from(key), Box::from(map_key)));
        }
        Ok(())
    }

    fn map_remove(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        self.delta.map_remove(state, kg, key, map_key)?;
        if !self.is_hidden(state, kg, key) {
            self.removed.insert((state, kg, Box::from(key), Box::from(map_key)));
        }
        Ok(())
    }

    fn map_entries(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        for (k, v) in self.merged_map(state, kg, key)? {
            visit(&k, &v);
        }
        Ok(())
    }

    fn list_get(&self, state: u32, kg: KeyGroup, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        // Checked first, so that a wrong state is the delta's error whatever the base holds.
        let mut appended = Vec::new();
        self.delta.list_get(state, kg, key, &mut |v| appended.push(v.to_vec()))?;
        if !self.is_hidden(state, kg, key) {
            self.base().list_get(state, kg, key, visit)?;
        }
        appended.iter().for_each(|v| visit(v));
        Ok(())
    }

    fn list_append(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.delta.list_append(state, kg, key, value)
    }

    fn clear(&mut self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<(), StateError> {
        self.delta.clear(state, kg, key)?;
        self.hidden.insert((state, kg, Box::from(key)));
        Ok(())
    }

    fn scan_where(
        &self,
        key_groups: Range<u32>,
        only: Option<u32>,
        visit: &mut dyn FnMut(StateEntry<'_>),
    ) -> Result<(), StateError> {
        let mut buf = Vec::new();
        let mut result = Ok(());
        for kg in key_groups {
            let key_group = kg as KeyGroup;
            // The base's entries that still show (a value or map entry written since shows from
            // the delta instead; list elements appended since follow the base's), then the delta's.
            self.base().scan_where(kg..kg + 1, only, &mut |e| {
                if result.is_err() || self.is_hidden(e.state, key_group, e.key) {
                    return;
                }
                buf.clear();
                let shadowed = match e.item {
                    StateItem::Value(_) => self.delta.value_get(e.state, key_group, e.key, &mut buf),
                    StateItem::MapEntry(k, _) => self
                        .delta
                        .map_get(e.state, key_group, e.key, k, &mut buf)
                        .map(|written| written || self.is_removed(e.state, key_group, e.key, k)),
                    StateItem::ListElement(_) => Ok(false),
                };
                match shadowed {
                    Ok(false) => visit(e),
                    Ok(true) => {}
                    Err(err) => result = Err(err),
                }
            })?;
            std::mem::replace(&mut result, Ok(()))?;
            self.delta.scan_where(kg..kg + 1, only, visit)?;
        }
        result
    }

    fn drop_key_groups(&mut self, key_groups: Range<u32>) -> Result<(), StateError> {
        self.delta.drop_key_groups(key_groups.clone())?;
        self.dropped.push(key_groups);
        Ok(())
    }

    fn key_count(&self) -> usize {
        let mut keys = HashSet::new();
        let _ = self.scan(self.key_groups.clone(), &mut |e| {
            keys.insert((e.state, e.key_group, e.key.to_vec()));
        });
        keys.len()
    }

    /// The delta's and what hides base entries, and the same of a base that is an overlay too.
    fn bytes_apart(&self) -> usize {
        let marks = (self.hidden.len() + self.removed.len()) * HIDDEN_BYTES;
        self.delta.approximate_bytes().unwrap_or(0) + marks + self.base().bytes_apart()
    }

    fn settled(&mut self) -> Result<Option<Box<dyn StateBackend>>, StateError> {
        OverlayBackend::settled(self)
    }

    /// A copy would merge the base and the delta entry by entry; a freeze stacks one more overlay
    /// (rare: only while the previous checkpoint's upload still runs).
    fn freezes_at_checkpoint(&self) -> bool {
        true
    }

    super::in_memory_snapshots!();
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [StateKind; 3] = [StateKind::Value, StateKind::Map, StateKind::List];

    #[test]
    fn conformance_over_an_empty_base() {
        super::super::conformance::run(&|range, kinds| {
            Box::new(freeze_base(Box::new(MemoryBackend::new(range.clone(), kinds)), range, kinds).1)
        });
    }

    /// Every entry, sorted, with list elements in their order per key.
    fn contents(b: &dyn StateBackend) -> Vec<(u16, u32, Vec<u8>, String)> {
        contents_of(b, None)
    }

    /// The same, of every state or of state `only`.
    fn contents_of(b: &dyn StateBackend, only: Option<u32>) -> Vec<(u16, u32, Vec<u8>, String)> {
        let mut all = Vec::new();
        b.scan_where(0..4, only, &mut |e| {
            let item = match e.item {
                StateItem::Value(v) => format!("v={}", String::from_utf8_lossy(v)),
                StateItem::MapEntry(k, v) => format!("m{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)),
                StateItem::ListElement(v) => format!("l={}", String::from_utf8_lossy(v)),
            };
            all.push((e.key_group, e.state, e.key.to_vec(), item));
        })
        .unwrap();
        // Stable: list elements of one key keep their order.
        all.sort_by(|a, b| {
            (a.0, a.1, &a.2)
                .cmp(&(b.0, b.1, &b.2))
                .then_with(|| if a.3.starts_with("l=") { std::cmp::Ordering::Equal } else { a.3.cmp(&b.3) })
        });
        all
    }

    /// Applies the same pseudo-random operations to a plain backend and to an overlay frozen
    /// over a copy of it, checking reads as they go, then that both hold the same entries, before
    /// and after the overlay settles (which it does only once the snapshot lets go of the base).
    #[test]
    fn an_overlay_reads_and_settles_like_the_backend_it_froze() {
        let mut plain = MemoryBackend::new(0..4, &KINDS);
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let op = |b: &mut dyn StateBackend, r: [u64; 5]| {
            let (kg, key, mk, v) = (r[1] as u16, [b'k', r[2] as u8], [b'm', r[3] as u8], [b'0' + r[4] as u8]);
            match r[0] {
                0 => b.value_put(0, kg, &key, &v).unwrap(),
                1 => b.clear(0, kg, &key).unwrap(),
                2 => b.map_put(1, kg, &key, &mk, &v).unwrap(),
                3 => b.map_remove(1, kg, &key, &mk).unwrap(),
                4 => b.clear(1, kg, &key).unwrap(),
                5 => b.list_append(2, kg, &key, &v).unwrap(),
                6 => b.clear(2, kg, &key).unwrap(),
                _ => b.drop_key_groups(u32::from(kg)..u32::from(kg) + 1).unwrap(),
            }
        };
        let mut draw = || [next(8), next(4), next(6), next(3), next(10)];
        let before: Vec<[u64; 5]> = (0..400).map(|_| draw()).filter(|r| r[0] != 7).collect();
        for r in &before {
            op(&mut plain, *r);
        }
        let mut copy = MemoryBackend::new(0..4, &KINDS);
        plain.scan(0..4, &mut |e| copy.insert(e).unwrap()).unwrap();
        let (frozen, overlay) = freeze_base(Box::new(copy), 0..4, &KINDS);
        let mut overlay: Box<dyn StateBackend> = Box::new(overlay);
        let snapshot_before = contents(&**frozen);
        for i in 0..600 {
            let r = draw();
            // Dropping a key group wipes a quarter of the state: rarely.
            if r[0] == 7 && i % 100 != 0 {
                continue;
            }
            op(&mut plain, r);
            op(&mut *overlay, r);
            let (kg, key) = (r[1] as u16, [b'k', r[2] as u8]);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            assert_eq!(plain.value_get(0, kg, &key, &mut a).unwrap(), overlay.value_get(0, kg, &key, &mut b).unwrap());
            assert_eq!(a, b);
            let list = |be: &dyn StateBackend| {
                let mut l = Vec::new();
                be.list_get(2, kg, &key, &mut |v| l.push(v.to_vec())).unwrap();
                l
            };
            assert_eq!(list(&plain), list(&*overlay), "list of {key:?} after op {r:?}");
            let map = |be: &dyn StateBackend| {
                let mut m = Vec::new();
                be.map_entries(1, kg, &key, &mut |k, v| m.push((k.to_vec(), v.to_vec()))).unwrap();
                m
            };
            assert_eq!(map(&plain), map(&*overlay), "map of {key:?} after op {r:?}");
        }
        assert_eq!(contents(&*overlay), contents(&plain), "a scan through the overlay");
        for state in 0..3 {
            assert_eq!(contents_of(&*overlay, Some(state)), contents_of(&plain, Some(state)), "state {state}");
        }
        assert_eq!(overlay.key_count(), plain.key_count());
        assert_eq!(contents(&**frozen), snapshot_before, "the frozen base did not change");
        assert!(overlay.settled().unwrap().is_none(), "the snapshot still holds the base");
        drop(frozen);
        let settled = overlay.settled().unwrap().expect("settles once the base is free");
        assert_eq!(contents(&*settled), contents(&plain), "the settled backend");
    }

    /// A fork's two overlays read the base as it was and their own writes, never each other's;
    /// the operator's settles with its writes once the shadow's is gone.
    #[test]
    fn a_forks_overlays_write_apart_and_the_operators_settles_once_the_shadows_is_dropped() {
        let mut base = MemoryBackend::new(0..4, &KINDS);
        let kg: KeyGroup = 1;
        base.value_put(0, kg, b"a", b"1").unwrap();
        base.value_put(0, kg, b"b", b"1").unwrap();
        let (mut live, mut shadow) = fork(Box::new(base), 0..4, &KINDS);
        live.value_put(0, kg, b"a", b"2").unwrap();
        shadow.value_put(0, kg, b"a", b"20").unwrap();
        shadow.clear(0, kg, b"b").unwrap();
        let get = |b: &dyn StateBackend, key: &[u8]| {
            let mut out = Vec::new();
            b.value_get(0, kg, key, &mut out).unwrap().then(|| String::from_utf8(out).unwrap())
        };
        assert_eq!((get(&*live, b"a"), get(&*live, b"b")), (Some("2".into()), Some("1".into())));
        assert_eq!((get(&*shadow, b"a"), get(&*shadow, b"b")), (Some("20".into()), None));
        assert!(live.bytes_apart() > 0 && shadow.bytes_apart() > live.bytes_apart());
        assert!(live.settled().unwrap().is_none(), "the shadow still reads the base");
        drop(shadow);
        let settled = live.settled().unwrap().expect("settles once the shadow is gone");
        assert_eq!((get(&*settled, b"a"), get(&*settled, b"b")), (Some("2".into()), Some("1".into())));
    }
}
