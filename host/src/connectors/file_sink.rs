//! The `file` sink: a directory of part files, one line per event value.
//!
//! Without checkpointing each subtask writes `part-<subtask>-0` directly. With checkpointing the
//! sink is exactly-once by two-phase commit, as Flink's `FileSink`:
//! ```text
//! .part-<subtask>.inprogress        written since the last barrier
//! .part-<subtask>-<n>.pending       synced at barrier n (pre-commit)
//! part-<subtask>-<n>                published when checkpoint n completes (commit)
//! ```
//! `<n>` is zero-padded, so `cat part-0-*` reads a subtask's output in order. Uncommitted files
//! are hidden (a leading dot), so readers of `part-*` only ever see committed output.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// How a file sink publishes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCommit {
    /// Straight into `part-<subtask>-0` (no checkpointing).
    Direct,
    /// By two-phase commit on checkpoints; `restored` is the checkpoint the job resumes from.
    TwoPhase {
        /// The checkpoint the job resumes from, if any.
        restored: Option<u64>,
    },
}

/// Creates file sink subtasks writing into one directory.
pub struct FileSinkFactory {
    dir: PathBuf,
    commit: FileCommit,
    /// `<dir>/.weir-sink.lock`, locked while the job runs: two jobs writing one directory would
    /// publish and delete each other's part files.
    _lock: File,
}

/// Locks `dir` for one job; refused while another job (in any process) has it.
fn lock(dir: &Path) -> Result<File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".weir-sink.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: flock on the descriptor of a file this function just opened; the lock goes with it.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another job is writing to {} (it holds {}); give each job a sink directory of its own",
            dir.display(),
            path.display()
        ));
    }
    Ok(file)
}

/// The kinds of file the sink leaves in its directory.
#[derive(Debug, PartialEq, Eq)]
enum PartFile {
    InProgress,
    Pending { checkpoint: u64 },
    Committed { checkpoint: u64 },
}

impl PartFile {
    fn parse(name: &str) -> Option<PartFile> {
        let checkpoint = |rest: &str| rest.rsplit_once('-').and_then(|(_, n)| n.parse().ok());
        if let Some(rest) = name.strip_prefix(".part-") {
            if rest.ends_with(".inprogress") {
                return Some(PartFile::InProgress);
            }
            return checkpoint(rest.strip_suffix(".pending")?).map(|checkpoint| PartFile::Pending { checkpoint });
        }
        checkpoint(name.strip_prefix("part-")?).map(|checkpoint| PartFile::Committed { checkpoint })
    }
}

fn in_progress_name(subtask: u32) -> String {
    format!(".part-{subtask}.inprogress")
}

fn pending_name(subtask: u32, checkpoint: u64) -> String {
    format!(".part-{subtask}-{checkpoint:010}.pending")
}

/// The name a pending file is published under.
fn committed_name(pending: &str) -> Option<&str> {
    pending.strip_prefix('.')?.strip_suffix(".pending")
}

impl FileSinkFactory {
    /// Creates `dir` if needed and prepares it. A fresh run removes every part file an earlier
    /// run left, so the directory holds exactly this run's output. A run resuming from checkpoint
    /// c publishes the files pending for checkpoints up to c (the previous run may have died
    /// between completing c and publishing), and removes what c does not cover: in-progress
    /// files, files pending for later checkpoints, and part files published after c (only when
    /// resuming from an older checkpoint than the newest; the resumed run writes them again).
    pub fn new(dir: PathBuf, commit: FileCommit) -> Result<Self, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        let factory = FileSinkFactory { _lock: lock(&dir)?, dir, commit };
        let restored = match commit {
            FileCommit::TwoPhase { restored: Some(id) } => Some(id),
            _ => None,
        };
        for (path, kind) in factory.part_files()? {
            let keep = match (kind, restored) {
                (PartFile::Pending { checkpoint }, Some(id)) if checkpoint <= id => {
                    factory.publish(&path)?;
                    true
                }
                (PartFile::Committed { checkpoint }, Some(id)) if checkpoint > id || checkpoint == 0 => {
                    tracing::warn!("removing {}: it was committed after checkpoint {id}", path.display());
                    false
                }
                (PartFile::Committed { .. }, Some(_)) => true,
                _ => false,
            };
            if !keep {
                fs::remove_file(&path).map_err(|e| format!("cannot remove old {}: {e}", path.display()))?;
            }
        }
        factory.sync_dir()?;
        Ok(factory)
    }

    /// The sink's files in its directory.
    fn part_files(&self) -> Result<Vec<(PathBuf, PartFile)>, String> {
        let entries = fs::read_dir(&self.dir).map_err(|e| format!("cannot list {}: {e}", self.dir.display()))?;
        Ok(entries
            .flatten()
            .filter_map(|e| Some((e.path(), PartFile::parse(&e.file_name().to_string_lossy())?)))
            .collect())
    }

    /// Renames a pending file to its committed name; done already when it is gone.
    fn publish(&self, pending: &Path) -> Result<(), String> {
        let name = pending.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(committed) = committed_name(&name) else { return Ok(()) };
        match fs::rename(pending, self.dir.join(committed)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot publish {}: {e}", pending.display()))
            }
            _ => Ok(()),
        }
    }

    /// Makes renames in the directory durable.
    fn sync_dir(&self) -> Result<(), String> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", self.dir.display()))
    }
}

/// The part file of a subtask when the sink writes directly (no checkpointing).
fn part_file(dir: &Path, subtask: u32) -> PathBuf {
    dir.join(format!("part-{subtask}-0"))
}

impl SinkFactory for FileSinkFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let mut sink = FileSink { dir: self.dir.clone(), subtask: info.index, commit: self.commit, writer: None };
        if self.commit == FileCommit::Direct {
            sink.writer = Some(sink.open(&part_file(&self.dir, info.index))?);
        }
        Ok(Box::new(sink))
    }

    fn commit(&self, id: u64) -> Result<(), String> {
        if self.commit == FileCommit::Direct {
            return Ok(());
        }
        for (path, kind) in self.part_files()? {
            if let PartFile::Pending { checkpoint } = kind
                && checkpoint <= id
            {
                self.publish(&path)?;
            }
        }
        self.sync_dir()
    }
}

struct FileSink {
    dir: PathBuf,
    subtask: u32,
    commit: FileCommit,
    /// The open part file (two-phase: the in-progress file, opened at the first event after a
    /// barrier, so that barriers with nothing new leave no empty files).
    writer: Option<(PathBuf, BufWriter<File>)>,
}

impl FileSink {
    fn open(&self, path: &Path) -> Result<(PathBuf, BufWriter<File>), String> {
        let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok((path.to_path_buf(), BufWriter::with_capacity(1 << 16, file)))
    }

    /// Flushes and syncs the open part file, if any, and returns its path.
    fn sync(&mut self) -> Result<Option<PathBuf>, String> {
        let Some((path, mut writer)) = self.writer.take() else { return Ok(None) };
        writer.flush().and_then(|_| writer.get_ref().sync_all()).map_err(|e| write_error(&path, e))?;
        Ok(Some(path))
    }
}

fn write_error(path: &Path, e: std::io::Error) -> String {
    format!("cannot write {}: {e}", path.display())
}

impl Sink for FileSink {
    fn write(&mut self, batch: &EventBatch) -> Result<(), String> {
        if self.writer.is_none() {
            self.writer = Some(self.open(&self.dir.join(in_progress_name(self.subtask)))?);
        }
        let Some((path, writer)) = &mut self.writer else { return Ok(()) };
        for event in batch.iter() {
            writer.write_all(event.value).map_err(|e| write_error(path, e))?;
            writer.write_all(b"\n").map_err(|e| write_error(path, e))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, id: u64) -> Result<(), String> {
        if self.commit == FileCommit::Direct {
            return Ok(());
        }
        let Some(in_progress) = self.sync()? else { return Ok(()) };
        let pending = self.dir.join(pending_name(self.subtask, id));
        fs::rename(&in_progress, &pending).map_err(|e| format!("cannot pre-commit {}: {e}", in_progress.display()))
    }

    /// Direct: the part file is complete. Two-phase: anything after the last barrier stays
    /// in progress; the job's final checkpoint leaves nothing there.
    fn finish(&mut self) -> Result<(), String> {
        self.sync().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(PartFile::parse(&in_progress_name(3)), Some(PartFile::InProgress));
        assert_eq!(PartFile::parse(&pending_name(3, 12)), Some(PartFile::Pending { checkpoint: 12 }));
        let pending = pending_name(3, 12);
        let committed = committed_name(&pending).unwrap();
        assert_eq!(committed, "part-3-0000000012");
        assert_eq!(PartFile::parse(committed), Some(PartFile::Committed { checkpoint: 12 }));
        assert_eq!(PartFile::parse("part-0-0"), Some(PartFile::Committed { checkpoint: 0 }));
        assert_eq!(PartFile::parse("notes.txt"), None);
        assert_eq!(PartFile::parse(".part-1-x.pending"), None);
    }
}
