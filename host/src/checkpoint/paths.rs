//! Where checkpoint files live, as pure functions: nothing else formats a storage path.
//!
//! Layout, in Flink's spirit, relative to the job's checkpoint storage:
//! ```text
//! <job-name>/chk-<n>/_metadata                 what the checkpoint holds, with checksums
//! <job-name>/chk-<n>/<uid>-<subtask>.state     one operator subtask's keyed state (canonical)
//! <job-name>/chk-<n>/<uid>-<subtask>/<file>    or its database's files (native, RocksDB)
//! <job-name>/shared/<name>.sst                 SST files incremental checkpoints share
//! <job-name>/savepoint-<n>                     a savepoint the job went on from (resume_points.rs)
//! ```
//! and for savepoints, relative to the savepoint directory (see `docs/savepoint-format.md`):
//! ```text
//! savepoint-<job-name>-<suffix>/_metadata
//! savepoint-<job-name>-<suffix>/<uid>-<subtask>.state
//! savepoint-<job-name>-<suffix>/<uid>-<subtask>/<file>     (native savepoints)
//! ```
//! Checkpoint ids are zero-padded so that names sort in id order.

/// The directory of all of job `job`'s checkpoints.
pub fn job_dir(job: &str) -> String {
    escape(job)
}

/// The directory of checkpoint `id` of job `job`.
pub fn checkpoint_dir(job: &str, id: u64) -> String {
    format!("{}/chk-{id:010}", job_dir(job))
}

/// The metadata file of a checkpoint.
pub fn metadata(job: &str, id: u64) -> String {
    format!("{}/_metadata", checkpoint_dir(job, id))
}

/// The keyed-state file of one operator subtask in a checkpoint.
pub fn state_file(job: &str, id: u64, uid: &str, subtask: u32) -> String {
    format!("{}/{}", checkpoint_dir(job, id), state_file_name(&native_dir_name(uid, subtask)))
}

/// The name of a keyed-state file, in a checkpoint or savepoint directory, from the name of its
/// snapshot ([`native_dir_name`], with the first key group of a part after it).
pub fn state_file_name(snapshot: &str) -> String {
    format!("{snapshot}.state")
}

/// The name of the directory of one operator subtask's native snapshot files, in a checkpoint or
/// savepoint directory.
pub fn native_dir_name(uid: &str, subtask: u32) -> String {
    format!("{}-{subtask}", escape(uid))
}

/// The directory of the files job `job`'s incremental checkpoints share.
pub fn shared_dir(job: &str) -> String {
    format!("{}/shared", job_dir(job))
}

/// A file of [`shared_dir`].
pub fn shared_file(job: &str, name: &str) -> String {
    format!("{}/{name}", shared_dir(job))
}

/// A name of a file directly in a directory: no separators, not `.` or `..`. Names read from a
/// `_metadata` must be such, so that none climbs out of its directory.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The directory of a savepoint of job `job`, inside the savepoint directory it goes to.
pub fn savepoint_dir(job: &str, suffix: &str) -> String {
    format!("savepoint-{}-{suffix}", escape(job))
}

/// The resume point of job `job` recording the savepoint it went on from at barrier `id`.
pub fn resume_point(job: &str, id: u64) -> String {
    format!("{}/savepoint-{id:010}", job_dir(job))
}

/// The barrier id of a resume point's file name (`savepoint-<n>`), if it is one.
pub fn parse_resume_point(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("savepoint-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The checkpoint id of a `chk-<n>` directory name, if it is one.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Job names and uids are free text; in a path, anything but `[A-Za-z0-9._-]` becomes `%XX`, so
/// that no name can climb out of its directory or collide with another after escaping.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(b as char),
            b'.' if !out.is_empty() => out.push('.'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(checkpoint_dir("clicks-per-user", 7), "clicks-per-user/chk-0000000007");
        assert_eq!(metadata("clicks-per-user", 7), "clicks-per-user/chk-0000000007/_metadata");
        assert_eq!(state_file("j", 12, "count-per-user", 1), "j/chk-0000000012/count-per-user-1.state");
    }

    #[test]
    fn names_cannot_escape_their_directory() {
        assert_eq!(checkpoint_dir("../etc", 1), "%2E.%2Fetc/chk-0000000001");
        assert_eq!(checkpoint_dir(".", 1), "%2E/chk-0000000001");
        assert_eq!(state_file("a b", 1, "x/y", 0), "a%20b/chk-0000000001/x%2Fy-0.state");
        assert_eq!(checkpoint_dir("v1.2", 1), "v1.2/chk-0000000001");
        assert_ne!(checkpoint_dir("a%2F", 1), checkpoint_dir("a/", 1));
    }

    #[test]
    fn ids_round_trip_and_sort() {
        assert_eq!(parse_checkpoint_dir("chk-0000000042"), Some(42));
        assert_eq!(parse_checkpoint_dir("chk-"), None);
        assert_eq!(parse_checkpoint_dir("chk-12a"), None);
        assert_eq!(parse_checkpoint_dir("shared"), None);
        let mut names: Vec<String> = [10, 9, 100].iter().map(|&id| checkpoint_dir("j", id)).collect();
        names.sort();
        assert_eq!(names, ["j/chk-0000000009", "j/chk-0000000010", "j/chk-0000000100"]);
    }
}
