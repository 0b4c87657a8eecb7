//! One key's entries of a map state in the memory backend: a sorted vector while the map is
//! small, a B-tree beyond.
//!
//! Why not always a B-tree: most maps hold a few entries (a key's timers are one or two), and a
//! B-tree's first node takes about 360 bytes for one entry; 1,000,000 keys with a timer each
//! allocated (and the kernel zeroed) 360 MB, which made setting a timer cost over a
//! microsecond. A vector of one entry takes 32.
use std::collections::BTreeMap;

type Bytes = Box<[u8]>;

/// Entries at most in the sorted vector; one more turns it into a B-tree (inserting into a
/// sorted vector moves the entries after it, which stays cheap this far).
const SMALL: usize = 32;

/// A key's map entries, ordered by map key.
pub(super) enum KeyMap {
    Small(Vec<(Bytes, Bytes)>),
    Large(BTreeMap<Bytes, Bytes>),
}

impl KeyMap {
    /// A map of one entry.
    pub(super) fn one(map_key: &[u8], value: &[u8]) -> Self {
        KeyMap::Small(vec![(map_key.into(), value.into())])
    }

    pub(super) fn get(&self, map_key: &[u8]) -> Option<&[u8]> {
        match self {
            KeyMap::Small(entries) => {
                entries.binary_search_by(|(k, _)| (**k).cmp(map_key)).ok().map(|i| &*entries[i].1)
            }
            KeyMap::Large(entries) => entries.get(map_key).map(|v| &**v),
        }
    }

    /// Sets `map_key` to `value`; returns the length of the value it replaced, if any.
    pub(super) fn insert(&mut self, map_key: &[u8], value: &[u8]) -> Option<usize> {
        match self {
            KeyMap::Small(entries) => match entries.binary_search_by(|(k, _)| (**k).cmp(map_key)) {
                Ok(i) => Some(std::mem::replace(&mut entries[i].1, value.into()).len()),
                Err(i) if entries.len() < SMALL => {
                    entries.insert(i, (map_key.into(), value.into()));
                    None
                }
                Err(_) => {
                    let mut large: BTreeMap<Bytes, Bytes> = std::mem::take(entries).into_iter().collect();
                    large.insert(map_key.into(), value.into());
                    *self = KeyMap::Large(large);
                    None
                }
            },
            KeyMap::Large(entries) => entries.insert(map_key.into(), value.into()).map(|v| v.len()),
        }
    }

    /// Removes `map_key`; returns the length of its value, if it was there.
    pub(super) fn remove(&mut self, map_key: &[u8]) -> Option<usize> {
        match self {
            KeyMap::Small(entries) => {
                let i = entries.binary_search_by(|(k, _)| (**k).cmp(map_key)).ok()?;
                Some(entries.remove(i).1.len())
            }
            KeyMap::Large(entries) => entries.remove(map_key).map(|v| v.len()),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            KeyMap::Small(entries) => entries.is_empty(),
            KeyMap::Large(entries) => entries.is_empty(),
        }
    }

    /// Its entries, ordered by map key.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match self {
            KeyMap::Small(entries) => Box::new(entries.iter().map(|(k, v)| (&**k, &**v))),
            KeyMap::Large(entries) => Box::new(entries.iter().map(|(k, v)| (&**k, &**v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the switch to a B-tree and back to empty, it holds what a B-tree holds, in order.
    #[test]
    fn behaves_as_a_btree() {
        let (mut map, mut reference) = (KeyMap::one(b"m0", b"v"), BTreeMap::from([(b"m0".to_vec(), b"v".to_vec())]));
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let map_key = format!("m{}", x % 50).into_bytes();
            let value = vec![b'v'; (x >> 8) as usize % 5];
            if x.is_multiple_of(3) {
                assert_eq!(map.remove(&map_key), reference.remove(&map_key).map(|v| v.len()));
            } else {
                assert_eq!(map.insert(&map_key, &value), reference.insert(map_key.clone(), value).map(|v| v.len()));
            }
            assert_eq!(map.get(b"m7"), reference.get(&b"m7"[..]).map(|v| &v[..]));
            assert_eq!(map.is_empty(), reference.is_empty());
            let entries: Vec<_> = map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert_eq!(entries, reference.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
        }
        assert!(matches!(map, KeyMap::Large(_)), "50 map keys make a B-tree");
    }
}
