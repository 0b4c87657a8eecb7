//! Key groups, as in Flink: a key belongs to key group `hash(key) mod max-parallelism`, and an
//! operator's subtask owns a contiguous range of key groups. State is stored by key group, so a
//! rescale moves whole key groups between subtasks and never rehashes a key.
//!
//! The hash is XXH3-64 of the key bytes with seed 0. It is part of the savepoint format: changing
//! it would move every key to another key group.
use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

/// Flink's default max parallelism, and weir's.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest max parallelism (key groups are stored as `u16`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// A key group index, below the job's max parallelism.
pub type KeyGroup = u16;

/// The key group of `key`.
pub fn key_group(key: &[u8], max_parallelism: u32) -> KeyGroup {
    (xxh3_64(key) % u64::from(max_parallelism)) as KeyGroup
}

/// The key groups owned by subtask `index` of an operator with `parallelism` subtasks
/// (Flink's `KeyGroupRangeAssignment.computeKeyGroupRangeForOperatorIndex`).
pub fn key_group_range(max_parallelism: u32, parallelism: u32, index: u32) -> Range<u32> {
    let start = (index * max_parallelism).div_ceil(parallelism);
    let end = ((index + 1) * max_parallelism).div_ceil(parallelism);
    start..end
}

/// The subtask that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
pub fn subtask_for_key_group(max_parallelism: u32, parallelism: u32, key_group: KeyGroup) -> usize {
    (u32::from(key_group) * parallelism / max_parallelism) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_owner() {
        for max_parallelism in [1, 7, 128, 1000] {
            for parallelism in 1..=max_parallelism.min(17) {
                let mut next = 0;
                for index in 0..parallelism {
                    let range = key_group_range(max_parallelism, parallelism, index);
                    assert_eq!(range.start, next, "ranges are contiguous");
                    assert!(!range.is_empty(), "every subtask owns a key group");
                    for kg in range.clone() {
                        let owner = subtask_for_key_group(max_parallelism, parallelism, kg as KeyGroup);
                        assert_eq!(owner, index as usize, "max {max_parallelism} p {parallelism} kg {kg}");
                    }
                    next = range.end;
                }
                assert_eq!(next, max_parallelism);
            }
        }
    }

    #[test]
    fn flink_ranges_for_128_over_3() {
        assert_eq!(key_group_range(128, 3, 0), 0..43);
        assert_eq!(key_group_range(128, 3, 1), 43..86);
        assert_eq!(key_group_range(128, 3, 2), 86..128);
    }

    #[test]
    fn key_group_is_stable_and_in_range() {
        // Pinned values: the assignment is part of the savepoint format.
        assert_eq!(key_group(b"u1", 128), key_group(b"u1", 128));
        let pinned: Vec<_> = [&b"k0"[..], b"k1", b"alice", b""].iter().map(|k| key_group(k, 128)).collect();
        assert_eq!(pinned, vec![PINNED[0], PINNED[1], PINNED[2], PINNED[3]]);
        for i in 0..10_000u32 {
            assert!(key_group(&i.to_le_bytes(), 128) < 128);
        }
    }

    const PINNED: [KeyGroup; 4] = [51, 69, 48, 66];

    #[test]
    fn keys_spread_over_key_groups() {
        let mut counts = [0u32; 128];
        for i in 0..128_000 {
            counts[key_group(format!("k{i}").as_bytes(), 128) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
