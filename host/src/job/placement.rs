//! Where a job's files go: [`Placement`] holds the directories a server lets jobs read and write
//! ([`AllowedDirs`]) and where checkpoints and savepoints go when a job names no place. A job file names paths
//! (sources, sinks, `file://` checkpoint storage, savepoint directories) and so do savepoint
//! requests; on a server that others can reach, each must lie inside an allowed directory once
//! `..` and symbolic links are resolved, or the job is refused, with a message that says the
//! same whether the path exists or not.
use std::path::{Component, Path, PathBuf};

/// Where jobs may read and write, and where their checkpoints and savepoints go by default.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Where they may read and write.
    pub allowed: AllowedDirs,
    /// Checkpoint storage when `[checkpointing]` names none (a URL; relative to the job file).
    pub checkpoints: String,
    /// The savepoint directory when neither a request nor the job names one.
    pub savepoints: String,
    /// Where RocksDB keeps its live databases when `[state]` names no `local-dir` (a path;
    /// relative to the job file).
    pub state: String,
}

impl Placement {
    /// Checks every path `spec` names against the allowed directories: sources, sinks,
    /// checkpoint storage and the savepoint directory (relative ones start at `base`).
    pub(super) fn check_paths(&self, spec: &super::spec::JobSpec, base: &Path) -> Result<(), String> {
        let allowed = &self.allowed;
        for source in &spec.sources {
            if let Some(path) = &source.path {
                allowed.check(&format!("source '{}'", source.uid), Path::new(path), base)?;
            }
        }
        for sink in &spec.sinks {
            if let Some(path) = &sink.path {
                allowed.check(&format!("sink '{}'", sink.uid), Path::new(path), base)?;
            }
        }
        if let Some(c) = &spec.checkpointing {
            let storage = c.storage.as_deref().unwrap_or(&self.checkpoints);
            allowed.check_url("[checkpointing] storage", storage, base)?;
            let savepoints = c.savepoint_dir.as_deref().unwrap_or(&self.savepoints);
            allowed.check_url("[checkpointing] savepoint-dir", savepoints, base)?;
        }
        if spec.state.backend == super::spec::BackendType::Rocksdb {
            let dir = spec.state.local_dir.as_deref().unwrap_or(&self.state);
            allowed.check("[state] local-dir", Path::new(dir), base)?;
        }
        Ok(())
    }

    /// The local user's own job (`weir run`): anywhere, checkpoints and savepoints under
    /// `weir-data/` beside the job file.
    pub fn local() -> Self {
        Placement {
            allowed: AllowedDirs::Anywhere,
            checkpoints: super::DEFAULT_CHECKPOINT_STORAGE.to_string(),
            savepoints: super::plan::DEFAULT_SAVEPOINT_DIR.to_string(),
            state: super::state::DEFAULT_LOCAL_DIR.to_string(),
        }
    }

    /// A server's jobs: within `allowed`, checkpoints and savepoints under its data directory
    /// `data` by default.
    pub fn server(data: &Path, allowed: AllowedDirs) -> Self {
        let data = std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf());
        Placement {
            allowed,
            checkpoints: format!("file://{}", data.join("checkpoints").display()),
            savepoints: format!("file://{}", data.join("savepoints").display()),
            state: data.join("rocksdb").display().to_string(),
        }
    }
}

/// Where jobs may read and write.
#[derive(Debug, Clone, Default)]
pub enum AllowedDirs {
    /// Anywhere the process can (`weir run`, and `weir serve` on loopback without a token: the
    /// local user's own).
    #[default]
    Anywhere,
    /// Inside these directories (resolved) only.
    Within(Vec<PathBuf>),
}

impl AllowedDirs {
    /// Only inside `dirs` (each created if missing, then resolved).
    pub fn within(dirs: &[PathBuf]) -> Result<Self, String> {
        let resolved = dirs
            .iter()
            .map(|dir| {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))
            })
            .collect::<Result<_, String>>()?;
        Ok(AllowedDirs::Within(resolved))
    }

    /// Checks `path` (relative to `base`), which `what` names in the refusal.
    pub fn check(&self, what: &str, path: &Path, base: &Path) -> Result<(), String> {
        let AllowedDirs::Within(roots) = self else { return Ok(()) };
        let resolved = resolve(&base.join(path));
        if roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(());
        }
        Err(format!(
            "{what}: {} is outside the directories this server lets jobs use (its data directory and those \
             given with --allow-dir)",
            path.display()
        ))
    }

    /// Checks a storage URL: `file://` URLs and plain paths are paths; other schemes are not on
    /// this machine's filesystem.
    pub fn check_url(&self, what: &str, url: &str, base: &Path) -> Result<(), String> {
        match url.strip_prefix("file://") {
            Some(path) => self.check(what, Path::new(path), base),
            None if url.contains("://") => Ok(()),
            None => self.check(what, Path::new(url), base),
        }
    }
}

/// `path` made absolute with its longest existing ancestor's symbolic links resolved and the
/// rest normalized (`..` removes a component), so that no spelling of a path leads out of a
/// directory unnoticed.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let mut resolved = loop {
        match existing.canonicalize() {
            Ok(resolved) => break resolved,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                // `..` at the end, or the root: resolve lexically from here on.
                _ => break PathBuf::from("/"),
            },
        }
    };
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => resolved.push(part),
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_pass_and_escapes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let allowed = AllowedDirs::within(std::slice::from_ref(&data)).unwrap();
        let base = dir.path();
        allowed.check("sink", Path::new("data/out/new/deeper"), base).unwrap();
        allowed.check_url("storage", "file://data/chk", base).unwrap();
        allowed.check_url("storage", "s3://bucket/x", base).unwrap();
        for escape in ["data/../secret", "data/missing/../../secret", "/etc/passwd", "other"] {
            let refused = allowed.check("source", Path::new(escape), base).unwrap_err();
            assert!(refused.contains("is outside the directories"), "{escape}: {refused}");
        }
        // A symbolic link inside that points outside is outside.
        std::os::unix::fs::symlink("/etc", data.join("link")).unwrap();
        assert!(allowed.check("source", Path::new("data/link/passwd"), base).is_err());
        assert!(AllowedDirs::Anywhere.check("source", Path::new("/etc/passwd"), base).is_ok());
    }
}
