//! [`Claims`]: the directories a job owns from its start to its final end, across restarts,
//! upgrades and rollbacks: every file sink's directory and its checkpoint directory. A second job
//! asking for one of them is refused while the first holds it, in this process or another: two
//! jobs publishing into one sink directory, or resuming from each other's checkpoints, would lose
//! output.
//!
//! Local directories are claimed with `flock` on a lock file inside them (so a claim dies with
//! its process, however it ends); every claim is also registered in this process, which is what
//! guards checkpoint storage that is not a local directory (`s3://`, `memory://`).
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Claims of this process, by key.
fn registry() -> &'static Mutex<HashSet<String>> {
    static CLAIMED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CLAIMED.get_or_init(Mutex::default)
}

/// One claimed directory: released when dropped.
struct Claim {
    key: String,
    /// The locked file, for a local directory.
    _file: Option<File>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// Everything one job has claimed.
#[derive(Default)]
pub struct Claims {
    claims: Vec<Claim>,
}

impl Claims {
    /// Claims `key` (a directory, or a storage location) for this job; when `local` is given,
    /// also locks the file `local` (created if need be) against other processes. `refusal` is
    /// the message when another job has it.
    pub fn claim(&mut self, key: String, local: Option<&Path>, refusal: impl Fn() -> String) -> Result<(), String> {
        if !registry().lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return Err(refusal());
        }
        let mut claim = Claim { key, _file: None };
        if let Some(path) = local {
            claim._file = Some(lock_file(path, &refusal)?);
        }
        self.claims.push(claim);
        Ok(())
    }
}

/// Opens and locks `path`; refused while another process holds it.
fn lock_file(path: &Path, refusal: &impl Fn() -> String) -> Result<File, String> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: flock on the descriptor of a file this function just opened; the lock goes with it.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(refusal());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".lock");
        let key = format!("test:{}", dir.path().display());
        let mut first = Claims::default();
        first.claim(key.clone(), Some(&lock), || "taken".into()).unwrap();
        let mut second = Claims::default();
        assert_eq!(second.claim(key.clone(), Some(&lock), || "taken".into()), Err("taken".to_string()));
        drop(first);
        second.claim(key, Some(&lock), || "taken".into()).unwrap();
    }
}
