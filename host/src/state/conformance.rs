//! The behaviour every [`StateBackend`] must have. Each backend's tests call [`run`].
use std::ops::Range;

use super::{StateBackend, StateEntry, StateError, StateItem, StateKind, move_key_groups};

/// Builds an empty backend for a key-group range and declared states.
pub(crate) type Factory<'a> = dyn Fn(Range<u32>, &[StateKind]) -> Box<dyn StateBackend> + 'a;

const KINDS: [StateKind; 3] = [StateKind::Value, StateKind::Map, StateKind::List];
const VALUE: u32 = 0;
const MAP: u32 = 1;
const LIST: u32 = 2;

pub(crate) fn run(make: &Factory<'_>) {
    value_state(make);
    map_state(make);
    list_state(make);
    misuse_is_an_error(make);
    scan_insert_move_and_drop(make);
}

fn get(b: &dyn StateBackend, kg: u16, key: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    b.value_get(VALUE, kg, key, &mut out).unwrap().then_some(out)
}

fn value_state(make: &Factory<'_>) {
    let mut b = make(0..4, &KINDS);
    assert_eq!(get(&*b, 1, b"a"), None);
    b.value_put(VALUE, 1, b"a", b"1").unwrap();
    b.value_put(VALUE, 2, b"a", b"other key group").unwrap();
    assert_eq!(get(&*b, 1, b"a").as_deref(), Some(&b"1"[..]));
    b.value_put(VALUE, 1, b"a", b"longer value").unwrap();
    assert_eq!(get(&*b, 1, b"a").as_deref(), Some(&b"longer value"[..]));
    b.value_put(VALUE, 1, b"", b"").unwrap();
    assert_eq!(get(&*b, 1, b"").as_deref(), Some(&b""[..]), "empty key and value are stored");
    // Reads append: the caller's buffer is extended, not replaced.
    let mut out = b"prefix:".to_vec();
    assert!(b.value_get(VALUE, 1, b"a", &mut out).unwrap());
    assert_eq!(out, b"prefix:longer value");
    b.clear(VALUE, 1, b"a").unwrap();
    assert_eq!(get(&*b, 1, b"a"), None);
    assert_eq!(get(&*b, 2, b"a").as_deref(), Some(&b"other key group"[..]));
    assert_eq!(b.key_count(), 2);
}

fn map_state(make: &Factory<'_>) {
    let mut b = make(0..4, &KINDS);
    b.map_put(MAP, 3, b"k", b"z", b"26").unwrap();
    b.map_put(MAP, 3, b"k", b"a", b"1").unwrap();
    b.map_put(MAP, 3, b"k", b"a", b"one").unwrap();
    b.map_put(MAP, 3, b"other", b"a", b"x").unwrap();
    let mut out = Vec::new();
    assert!(b.map_get(MAP, 3, b"k", b"a", &mut out).unwrap());
    assert_eq!(out, b"one");
    assert!(!b.map_get(MAP, 3, b"k", b"missing", &mut Vec::new()).unwrap());
    let mut entries = Vec::new();
    b.map_entries(MAP, 3, b"k", &mut |k, v| entries.push((k.to_vec(), v.to_vec()))).unwrap();
    assert_eq!(entries, vec![(b"a".to_vec(), b"one".to_vec()), (b"z".to_vec(), b"26".to_vec())]);
    b.map_remove(MAP, 3, b"k", b"a").unwrap();
    b.map_remove(MAP, 3, b"k", b"never there").unwrap();
    let mut n = 0;
    b.map_entries(MAP, 3, b"k", &mut |_, _| n += 1).unwrap();
    assert_eq!(n, 1);
    b.clear(MAP, 3, b"k").unwrap();
    b.map_entries(MAP, 3, b"k", &mut |_, _| panic!("cleared")).unwrap();
    assert!(b.map_get(MAP, 3, b"other", b"a", &mut Vec::new()).unwrap());
}

fn list_state(make: &Factory<'_>) {
    let mut b = make(0..4, &KINDS);
    for v in [&b"first"[..], b"second", b"third"] {
        b.list_append(LIST, 0, b"k", v).unwrap();
    }
    let mut items = Vec::new();
    b.list_get(LIST, 0, b"k", &mut |v| items.push(v.to_vec())).unwrap();
    assert_eq!(items, vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]);
    b.clear(LIST, 0, b"k").unwrap();
    b.list_get(LIST, 0, b"k", &mut |_| panic!("cleared")).unwrap();
}

fn misuse_is_an_error(make: &Factory<'_>) {
    let mut b = make(4..8, &KINDS);
    assert!(matches!(
        b.value_put(MAP, 4, b"k", b"v"),
        Err(StateError::WrongState { state: MAP, expected: StateKind::Value })
    ));
    assert!(matches!(b.list_append(9, 4, b"k", b"v"), Err(StateError::WrongState { state: 9, .. })));
    assert!(matches!(b.clear(9, 4, b"k"), Err(StateError::UnknownState { state: 9 })));
    assert!(matches!(b.value_put(VALUE, 3, b"k", b"v"), Err(StateError::KeyGroupNotOwned { key_group: 3, .. })));
    assert!(matches!(b.value_get(VALUE, 8, b"k", &mut Vec::new()), Err(StateError::KeyGroupNotOwned { .. })));
    assert_eq!(b.key_count(), 0);
}

fn owned(entry: StateEntry<'_>) -> (u16, u32, Vec<u8>, String) {
    let item = match entry.item {
        StateItem::Value(v) => format!("value {}", String::from_utf8_lossy(v)),
        StateItem::MapEntry(k, v) => format!("map {}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)),
        StateItem::ListElement(v) => format!("list {}", String::from_utf8_lossy(v)),
    };
    (entry.key_group, entry.state, entry.key.to_vec(), item)
}

fn scan_all(b: &dyn StateBackend, range: Range<u32>) -> Vec<(u16, u32, Vec<u8>, String)> {
    let mut all = Vec::new();
    b.scan(range, &mut |e| all.push(owned(e))).unwrap();
    all.sort();
    all
}

fn scan_insert_move_and_drop(make: &Factory<'_>) {
    let mut a = make(0..8, &KINDS);
    for kg in 0..8u16 {
        let key = format!("key{kg}");
        a.value_put(VALUE, kg, key.as_bytes(), format!("v{kg}").as_bytes()).unwrap();
        a.map_put(MAP, kg, key.as_bytes(), b"m", b"1").unwrap();
        a.list_append(LIST, kg, key.as_bytes(), b"x").unwrap();
        a.list_append(LIST, kg, key.as_bytes(), b"y").unwrap();
    }
    assert_eq!(a.key_count(), 24);
    let upper = scan_all(&*a, 4..8);
    assert_eq!(upper.len(), 4 * 4, "one value, one map entry, two list elements per key group");
    assert!(upper.iter().all(|(kg, ..)| (4..8).contains(kg)));
    assert!(upper.contains(&(5, LIST, b"key5".to_vec(), "list y".to_string())));
    // One state's scan is the scan's entries of that state, in the same order.
    for state in [VALUE, MAP, LIST] {
        let (mut of_state, mut filtered) = (Vec::new(), Vec::new());
        a.scan_state(state, 3..7, &mut |e| of_state.push(owned(e))).unwrap();
        a.scan(3..7, &mut |e| {
            if e.state == state {
                filtered.push(owned(e));
            }
        })
        .unwrap();
        assert_eq!(of_state.len(), if state == LIST { 8 } else { 4 });
        assert_eq!(of_state, filtered, "state {state}");
    }

    // Moving hands exactly those entries over, list order included, and drops them at the source.
    let mut b = make(4..8, &KINDS);
    move_key_groups(&mut *a, &mut *b, 4..8).unwrap();
    assert_eq!(scan_all(&*b, 4..8), upper);
    let mut list = Vec::new();
    b.list_get(LIST, 6, b"key6", &mut |v| list.push(v.to_vec())).unwrap();
    assert_eq!(list, vec![b"x".to_vec(), b"y".to_vec()]);
    assert!(scan_all(&*a, 4..8).is_empty());
    assert_eq!(scan_all(&*a, 0..4).len(), 16);
    assert_eq!((a.key_count(), b.key_count()), (12, 12));

    a.drop_key_groups(0..2).unwrap();
    assert_eq!(scan_all(&*a, 0..4).len(), 8);
    assert!(a.drop_key_groups(7..9).is_err(), "dropping key groups not held is an error");
}
