//! Checkpoint storage through `object_store`, for the synchronous subtask threads: each call
//! blocks on the store's future on a small runtime of the storage's own.
//!
//! URLs: `file://<path>` (a relative path starts at the job file's directory), `memory://`
//! (for tests) and `s3://<bucket>[/<prefix>]` with the usual AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for
//! S3-compatible servers, `AWS_ALLOW_HTTP=true` for plain HTTP).
//!
//! S3 requests are retried briefly ([`S3_RETRY`]): a checkpoint whose storage is down fails within
//! seconds and counts against `tolerable-failures`, instead of hanging for object_store's default
//! three minutes of retries.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::paths;

/// Why storage cannot be opened or used. Messages name the storage URL and the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL is not one weir can use.
    #[error("checkpoint storage {url}: {reason}")]
    Url {
        /// The storage URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A read, write, list or delete failed.
    #[error("checkpoint storage {url}: {operation} {path}: {cause}")]
    Io {
        /// The storage URL.
        url: String,
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: String,
        /// The store's error.
        cause: String,
        /// The file does not exist (as opposed to storage that cannot be reached).
        not_found: bool,
    },
}

impl StorageError {
    /// True when a file that was read does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Io { not_found: true, .. })
    }
}

/// Retries of S3 requests: three, 100 ms to 1 s apart, within 5 s.
pub const S3_RETRY: RetryConfig = RetryConfig {
    backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1), base: 2.0 },
    max_retries: 3,
    retry_timeout: Duration::from_secs(5),
};

/// Where a job's checkpoints are stored. Clones share the store.
#[derive(Clone)]
pub struct Storage {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// For `file://` storage, its directory: objects are files there, and deleting a checkpoint
    /// also removes the directory its files leave empty.
    local_root: Option<std::path::PathBuf>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Storage {
    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens storage at `url` to write to, creating a local directory if need be; a relative
    /// `file://` path starts at `base`.
    pub fn open(url: &str, base: &Path) -> Result<Self, StorageError> {
        Self::open_with(url, base, true)
    }

    /// Opens storage at `url` to read from: a local directory must exist (nothing is created).
    pub fn open_existing(url: &str, base: &Path) -> Result<Self, StorageError> {
        Self::open_with(url, base, false)
    }

    fn open_with(url: &str, base: &Path, create: bool) -> Result<Self, StorageError> {
        let error = |reason: String| StorageError::Url { url: url.to_string(), reason };
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(error("no path after file://".to_string()));
            }
            let dir = std::path::absolute(base.join(path)).map_err(|e| error(e.to_string()))?;
            if create {
                std::fs::create_dir_all(&dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
            } else if !dir.is_dir() {
                return Err(error(format!("{} is not a directory", dir.display())));
            }
            local_root = Some(dir.clone());
            Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| error(e.to_string()))?)
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(error("no bucket after s3://".to_string()));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(S3_RETRY)
                // Client settings one by one: `with_client_options` would drop those from the
                // environment, such as AWS_ALLOW_HTTP.
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "2s")
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
                .build()
                .map_err(|e| error(e.to_string()))?;
            match prefix.trim_matches('/') {
                "" => Arc::new(s3),
                prefix => Arc::new(PrefixStore::new(s3, prefix)),
            }
        } else {
            return Err(error("the URL must start with file://, s3:// or memory://".to_string()));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| error(format!("cannot start its I/O runtime: {e}")))?;
        Ok(Storage { url: url.to_string(), store, local_root, runtime: Arc::new(runtime) })
    }

    fn io(&self, operation: &'static str, path: &str, cause: object_store::Error) -> StorageError {
        let not_found = matches!(cause, object_store::Error::NotFound { .. });
        StorageError::Io {
            url: self.url.clone(),
            operation,
            path: path.to_string(),
            cause: cause.to_string(),
            not_found,
        }
    }

    /// Where `path` is on the local filesystem, for `file://` storage.
    pub fn local_path(&self, path: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// A path in this storage as people should see it: a local path for `file://`, else the URL.
    pub fn display(&self, path: &str) -> String {
        match &self.local_root {
            Some(root) => root.join(path).display().to_string(),
            None => format!("{}/{path}", self.url.trim_end_matches('/')),
        }
    }

    /// Writes a whole file; readers see all of it or none of it.
    pub fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let location = StorePath::from(path);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes)))
            .map(drop)
            .map_err(|e| self.io("writing", path, e))
    }

    /// Reads a whole file.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let location = StorePath::from(path);
        self.runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.io("reading", path, e))
    }

    /// Every file under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let location = StorePath::from(prefix);
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(Some(&location)).try_collect())
            .map_err(|e| self.io("listing", prefix, e))?;
        let mut files: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        files.sort();
        Ok(files)
    }

    /// The ids of job `job`'s checkpoint directories, ascending (complete or not; locally also
    /// those holding only what an upload cut short left, which object stores do not list).
    pub fn checkpoints(&self, job: &str) -> Result<Vec<u64>, StorageError> {
        let prefix = paths::job_dir(job);
        let mut ids: Vec<u64> = self
            .list(&prefix)?
            .iter()
            .filter_map(|file| file.strip_prefix(&format!("{prefix}/"))?.split('/').next())
            .filter_map(paths::parse_checkpoint_dir)
            .collect();
        if let Some(root) = &self.local_root {
            let dirs = std::fs::read_dir(root.join(&prefix)).into_iter().flatten().flatten();
            ids.extend(dirs.filter_map(|d| paths::parse_checkpoint_dir(&d.file_name().to_string_lossy())));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes every file of checkpoint `id` of job `job`.
    pub fn delete_checkpoint(&self, job: &str, id: u64) -> Result<(), StorageError> {
        self.delete_dir(&paths::checkpoint_dir(job, id))
    }

    /// Deletes one file; done already when it is gone.
    pub fn delete_file(&self, path: &str) -> Result<(), StorageError> {
        let location = StorePath::from(path);
        match self.runtime.block_on(self.store.delete(&location)) {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            result => result.map_err(|e| self.io("deleting", path, e)),
        }
    }

    /// Removes directory `dir` if nothing is left in it; true when it is gone (object stores
    /// have no directories: there, when nothing is left under it).
    pub fn remove_dir_if_empty(&self, dir: &str) -> Result<bool, StorageError> {
        if !self.list(dir)?.is_empty() {
            return Ok(false);
        }
        if let Some(root) = &self.local_root {
            return Ok(std::fs::remove_dir(root.join(dir)).is_ok() || !root.join(dir).exists());
        }
        Ok(true)
    }

    /// Deletes every file under directory `dir`; locally the whole directory, with what an
    /// upload cut short left in it.
    fn delete_dir(&self, dir: &str) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            return match std::fs::remove_dir_all(root.join(dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
                    url: self.url.clone(),
                    operation: "deleting",
                    path: dir.to_string(),
                    cause: e.to_string(),
                    not_found: false,
                }),
                _ => Ok(()),
            };
        }
        for file in self.list(dir)? {
            let location = StorePath::from(file.as_str());
            self.runtime.block_on(self.store.delete(&location)).map_err(|e| self.io("deleting", &file, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(storage: &Storage) {
        storage.put(&paths::state_file("job", 2, "count", 0), b"two".to_vec()).unwrap();
        let native = format!("{}/{}/CURRENT", paths::checkpoint_dir("job", 2), paths::native_dir_name("count", 1));
        storage.put(&native, b"MANIFEST-000005".to_vec()).unwrap();
        storage.put(&paths::metadata("job", 2), b"meta".to_vec()).unwrap();
        storage.put(&paths::metadata("job", 10), b"ten".to_vec()).unwrap();
        storage.put(&paths::metadata("other", 1), b"x".to_vec()).unwrap();
        assert_eq!(storage.get(&paths::state_file("job", 2, "count", 0)).unwrap(), b"two");
        assert_eq!(storage.checkpoints("job").unwrap(), vec![2, 10]);
        storage.delete_checkpoint("job", 2).unwrap();
        assert_eq!(storage.checkpoints("job").unwrap(), vec![10]);
        assert_eq!(storage.checkpoints("other").unwrap(), vec![1]);
        let missing = storage.get(&paths::metadata("job", 2)).unwrap_err().to_string();
        assert!(missing.contains("reading job/chk-0000000002/_metadata"), "{missing}");
    }

    #[test]
    fn local_files_relative_to_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open("file://checkpoints", dir.path()).unwrap();
        exercise(&storage);
        assert!(dir.path().join("checkpoints/job/chk-0000000010/_metadata").is_file());
        assert!(!dir.path().join("checkpoints/job/chk-0000000002").exists(), "the emptied directories go too");
        // What a killed upload leaves (a staged file object_store does not list) is a checkpoint
        // directory too, deleted with its leftovers.
        let cut_short = dir.path().join("checkpoints/job/chk-0000000011/count-0");
        std::fs::create_dir_all(&cut_short).unwrap();
        std::fs::write(cut_short.join("000009.sst#1"), b"half").unwrap();
        assert_eq!(storage.checkpoints("job").unwrap(), vec![10, 11]);
        storage.delete_checkpoint("job", 11).unwrap();
        assert!(!dir.path().join("checkpoints/job/chk-0000000011").exists());
    }

    #[test]
    fn in_memory() {
        exercise(&Storage::open("memory://", Path::new(".")).unwrap());
    }

    #[test]
    fn unsupported_urls_are_named() {
        for url in ["s3://", "file://", "ftp://x"] {
            let err = Storage::open(url, Path::new(".")).err().expect("refused").to_string();
            assert!(err.starts_with(&format!("checkpoint storage {url}: ")), "{err}");
        }
    }
}
