//! The value-state table of the memory backend: one record per key holding the key and value
//! bytes together, inline in the table when they fit in [`INLINE`] bytes. A lookup then touches
//! the table alone for small entries, and one heap block otherwise, instead of a key block and a
//! value block: value state is the hot path of every keyed operator.
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Key plus value bytes stored inside the record itself.
const INLINE: usize = 22;

enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

struct Record {
    key_len: u32,
    data: Bytes,
}

impl Record {
    fn new(key: &[u8], value: &[u8]) -> Self {
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
        Record { key_len: key.len() as u32, data }
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
                *self = Record::new(&key, value);
            }
        }
    }
}

/// Values by key.
pub(super) struct ValueTable {
    table: HashTable<Record>,
    hasher: foldhash::fast::RandomState,
}

impl ValueTable {
    pub(super) fn new(hasher: foldhash::fast::RandomState) -> Self {
        ValueTable { table: HashTable::new(), hasher }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.table.find(self.hasher.hash_one(key), |r| r.key() == key).map(Record::value)
    }

    pub(super) fn put(&mut self, key: &[u8], value: &[u8]) {
        let hash = self.hasher.hash_one(key);
        match self.table.find_mut(hash, |r| r.key() == key) {
            Some(record) => record.set_value(value),
            None => {
                let hasher = &self.hasher;
                self.table.insert_unique(hash, Record::new(key, value), |r| hasher.hash_one(r.key()));
            }
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        if let Ok(entry) = self.table.find_entry(self.hasher.hash_one(key), |r| r.key() == key) {
            entry.remove();
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table.iter().map(|r| (r.key(), r.value()))
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_small() {
        assert_eq!(std::mem::size_of::<Record>(), 32);
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
}
