//! The value-state table of the memory backend: an open-addressing hash table (linear probing,
//! backward-shift deletion) of 32-byte records that hold the key and value bytes together, inline
//! when they fit in [`INLINE`] bytes.
//!
//! Why not `hashbrown`: value state is the hot path of every keyed operator, and with 100,000 keys
//! each lookup is a cache miss. A batch knows all its keys before it reads any, so it can
//! [`prefetch`](ValueTable::prefetch) every key's home slot first and let the misses overlap; that
//! needs the slot's address from the hash, which hashbrown does not expose. A small record also
//! makes a lookup touch one cache line instead of a table slot plus a key block plus a value block.
use std::hash::BuildHasher;

/// Key plus value bytes stored inside the record itself.
const INLINE: usize = 22;

/// Slots per entry at most, before the table doubles (load factor 7/8 would make probe runs long;
/// 1/2 keeps them short while records are small).
const MAX_LOAD_NUM: usize = 1;
const MAX_LOAD_DEN: usize = 2;

enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

struct Record {
    /// Low bits of the key's hash: its home slot, recomputed without touching the key.
    hash: u32,
    key_len: u32,
    data: Bytes,
}

impl Record {
    fn new(hash: u32, key: &[u8], value: &[u8]) -> Self {
        let len = key.len() + value.len();
        let data = if len <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            bytes[key.len()..len].copy_from_slice(value);
            Bytes::Inline { len: len as u8, bytes }
        } else {
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(value);
            Bytes::Heap(bytes.into_boxed_slice())
        };
        Record { hash, key_len: key.len() as u32, data }
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            Bytes::Inline { len, bytes } => &bytes[..*len as usize],
            Bytes::Heap(bytes) => bytes,
        }
    }

    fn key(&self) -> &[u8] {
        &self.bytes()[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.bytes()[self.key_len as usize..]
    }

    /// Replaces the value, in place when the length is unchanged.
    fn set_value(&mut self, value: &[u8]) {
        let key_len = self.key_len as usize;
        let same_len = self.bytes().len() - key_len == value.len();
        match &mut self.data {
            Bytes::Inline { bytes, .. } if same_len => bytes[key_len..key_len + value.len()].copy_from_slice(value),
            Bytes::Heap(bytes) if same_len => bytes[key_len..].copy_from_slice(value),
            _ => {
                let key = self.key().to_vec();
                *self = Record::new(self.hash, &key, value);
            }
        }
    }
}

/// Byte equality without a `memcmp` call for short keys, the common case (a call costs more than
/// comparing a few bytes; profiles showed `memcmp` at 5% of a keyed operator's time).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() <= 16 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    a == b
}

/// Values by key.
pub(super) struct ValueTable {
    /// Power-of-two many slots (or none before the first insert).
    slots: Vec<Option<Record>>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl ValueTable {
    pub(super) fn new(hasher: foldhash::fast::RandomState) -> Self {
        ValueTable { slots: Vec::new(), len: 0, hasher }
    }

    fn hash(&self, key: &[u8]) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, hash: u32, key: &[u8]) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            match &self.slots[i] {
                None => return Err(i),
                Some(r) if r.hash == hash && same_bytes(r.key(), key) => return Ok(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Asks the CPU to start loading `key`'s home slot, so that a lookup soon after does not wait.
    #[inline]
    pub(super) fn prefetch(&self, key: &[u8]) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[self.hash(key) as usize & self.mask()];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint with no effect on memory; the pointer is to a live slot.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (slot as *const Option<Record>).cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.probe(self.hash(key), key).ok()?;
        self.slots[i].as_ref().map(Record::value)
    }

    /// Sets `key`'s value; returns the length of the value it replaced, if any.
    pub(super) fn put(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            self.grow();
        }
        let hash = self.hash(key);
        match self.probe(hash, key) {
            Ok(i) => {
                let record = self.slots[i].as_mut()?;
                let replaced = record.value().len();
                record.set_value(value);
                Some(replaced)
            }
            Err(i) => {
                self.slots[i] = Some(Record::new(hash, key, value));
                self.len += 1;
                None
            }
        }
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, (0..capacity).map(|_| None).collect());
        let mask = self.mask();
        for record in old.into_iter().flatten() {
            let mut i = record.hash as usize & mask;
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = Some(record);
        }
    }

    /// Removes `key`; returns the length of the value it had, if any.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let Ok(mut hole) = self.probe(self.hash(key), key) else { return None };
        let removed = self.slots[hole].take().map(|r| r.value().len());
        self.len -= 1;
        // Backward-shift: move later records of the probe run into the hole when the hole lies
        // between their home slot and where they sit, so that no lookup stops early.
        let mask = self.mask();
        let mut i = (hole + 1) & mask;
        while let Some(record) = &self.slots[i] {
            let home = record.hash as usize & mask;
            let distance_from_home = i.wrapping_sub(home) & mask;
            let distance_to_hole = i.wrapping_sub(hole) & mask;
            if distance_from_home >= distance_to_hole {
                self.slots[hole] = self.slots[i].take();
                hole = i;
            }
            i = (i + 1) & mask;
        }
        removed
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.slots.iter().flatten().map(|r| (r.key(), r.value()))
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn records_stay_small() {
        assert_eq!(std::mem::size_of::<Option<Record>>(), 32);
    }

    #[test]
    fn values_change_size_across_inline_and_heap() {
        let mut t = ValueTable::new(Default::default());
        let long = vec![7u8; 40];
        t.put(b"k", b"1");
        t.put(b"k", &long);
        assert_eq!(t.get(b"k"), Some(&long[..]));
        t.put(b"k", b"22");
        assert_eq!(t.get(b"k"), Some(&b"22"[..]));
        t.put(b"k", b"33");
        assert_eq!(t.get(b"k"), Some(&b"33"[..]));
        t.put(&long, b"v");
        assert_eq!(t.get(&long), Some(&b"v"[..]));
        assert_eq!(t.len(), 2);
        t.remove(b"k");
        assert_eq!(t.get(b"k"), None);
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(&long[..], &b"v"[..])]);
    }

    /// Random puts, overwrites and removes agree with std's HashMap. Small key sets with many
    /// removes keep the table small and its probe runs wrapping around, which exercises the
    /// backward-shift deletion.
    #[test]
    fn agrees_with_a_hash_map_under_random_operations() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 7;
            rng ^= rng >> 9;
            rng
        };
        for round in 0..4 {
            let mut table = ValueTable::new(Default::default());
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            let keys = [50u64, 500, 5000, 20][round];
            for step in 0..40_000u64 {
                let key = format!("key-{}", next() % keys).into_bytes();
                match next() % 10 {
                    0..=5 => {
                        let value = vec![b'v'; (next() % 30) as usize];
                        table.put(&key, &value);
                        model.insert(key.clone(), value);
                    }
                    6..=7 => {
                        table.remove(&key);
                        model.remove(&key);
                    }
                    _ => assert_eq!(table.get(&key), model.get(&key).map(Vec::as_slice), "step {step}"),
                }
                table.prefetch(&key);
            }
            assert_eq!(table.len(), model.len());
            for (k, v) in &model {
                assert_eq!(table.get(k), Some(&v[..]));
            }
            let mut all: Vec<_> = table.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            all.sort();
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort();
            assert_eq!(all, expected);
        }
    }
}
