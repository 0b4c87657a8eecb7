//! The `file` sink: a directory of part files, one line per event value.
//!
//! Every run of a job (each attempt, each restart after an upgrade) writes files of its own, named
//! by a run token, so that no run ever overwrites or deletes what another committed (Flink's
//! `FileSink` names its files `part-<uuid>-<subtask>-<counter>` for the same reason):
//! ```text
//! part-<run>-<subtask>-0                 without checkpointing: written directly
//! .part-<run>-<subtask>.inprogress       with checkpointing: written since the last barrier
//! .part-<run>-<subtask>-<n>.pending      synced at barrier n (pre-commit)
//! part-<run>-<subtask>-<n>               published when checkpoint n completes (commit)
//! ```
//! `<run>` is 19 hex digits: the run's start in milliseconds (11 digits), so that names sort in
//! the order runs started, then the first 8 hex digits of the job's id, which tell the sink whose
//! a file is. `<n>` is zero-padded, so `cat part-*` reads each run's output in order. Uncommitted
//! files are hidden (a leading dot), so readers of `part-*` only ever see committed output.
//!
//! What a run has committed at each barrier is recorded in the checkpoint or savepoint (per run
//! token, the highest barrier id covered), as Flink keeps its sinks' committables in the
//! checkpoint. A run that resumes from one makes the directory hold exactly that output: files it
//! records are published (pending ones) or brought back (set-aside ones); files of the same job
//! (or of the job the checkpoint was taken of) that it does not record are moved to
//! `.superseded/` in the directory. That happens when a job resumes from an older point than its
//! newest output (a rollback, a restart after a savepoint the job went on after, `--from-checkpoint`
//! of an older checkpoint, or a savepoint restored into the directory of the job it was taken of):
//! the resumed run writes that output again. Nothing is ever deleted but the job's own
//! in-progress files, which no barrier covers. Files of other jobs are left alone. (Without
//! checkpointing, files are written directly and nothing is set aside: a restore from a
//! savepoint other than a stop's repeats the output written after it.)
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

mod names;

use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};
use names::{Kind, PartFile, committed_name, direct_name, in_progress_name, job_tag, pending_name, run_token};

/// How a file sink publishes its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCommit {
    /// Straight into `part-<run>-<subtask>-0` (no checkpointing).
    Direct,
    /// By two-phase commit on checkpoints.
    TwoPhase {
        /// The checkpoint or savepoint the job resumes from, if any.
        restored: Option<Restored>,
    },
}

/// The checkpoint or savepoint a two-phase file sink resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The id of the job that took it.
    pub job_id: String,
    /// Its barrier id.
    pub id: u64,
    /// What the sink had committed at it ([`SinkFactory::committed`]), when it records that;
    /// else every file of that job up to `id` counts (checkpoints of older weirs).
    pub committed: Option<serde_json::Value>,
}

/// What a run's output is made of: per run token, the highest barrier id covered.
type Runs = std::collections::BTreeMap<String, u64>;

/// Whether part file `name` belongs to the output a file sink's record `committed` describes
/// (what [`SinkFactory::committed`] returned at a barrier): a file of a run the record lists, of
/// a barrier at or before the one it covers. What a comparison from a savepoint on leaves out.
pub fn recorded_in(committed: &serde_json::Value, name: &str) -> bool {
    let Some(file) = PartFile::parse(name) else { return false };
    let covered = committed["runs"][&file.run].as_u64();
    file.kind.checkpoint().is_some_and(|n| covered.is_some_and(|last| n <= last))
}

/// Where superseded committed files are moved, inside the sink's directory.
const SUPERSEDED: &str = ".superseded";
/// Creates file sink subtasks writing into one directory. The directory is the job's alone while
/// it runs: the job claims it (see `job::claims`).
pub struct FileSinkFactory {
    dir: PathBuf,
    commit: FileCommit,
    /// This run's token.
    run: String,
    /// The job's tag: which files in the directory are its own.
    job: String,
    /// The committed output this run started from.
    restored: Runs,
}

impl FileSinkFactory {
    /// Creates `dir` if needed and prepares it for a run of job `job_id`: a run resuming from a
    /// checkpoint or savepoint brings the directory to the output that one records (see the
    /// module's docs). Files of other jobs are left alone.
    pub fn new(dir: PathBuf, commit: FileCommit, job_id: &str) -> Result<Self, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        let job = job_tag(job_id);
        let mut factory = FileSinkFactory { run: run_token(&job), job, dir, commit, restored: Runs::new() };
        let FileCommit::TwoPhase { restored } = factory.commit.clone() else { return Ok(factory) };
        let aside = factory.dir.join(SUPERSEDED);
        let mut files = factory.part_files(&factory.dir)?;
        files.extend(factory.part_files(&aside).unwrap_or_default());
        let restored_job = restored.as_ref().map(|r| job_tag(&r.job_id));
        factory.restored = match &restored {
            Some(Restored { committed: Some(committed), .. }) => serde_json::from_value(committed["runs"].clone())
                .map_err(|e| format!("the checkpoint's record of the sink's output is unreadable: {e}"))?,
            // Recorded by no one: every file of the job up to the barrier.
            Some(Restored { id, .. }) => {
                let mut runs = Runs::new();
                for (_, file) in files.iter().filter(|(_, f)| Some(f.job()) == restored_job.as_deref()) {
                    if let Some(n) = file.kind.checkpoint().filter(|n| n <= id) {
                        let through = runs.entry(file.run.clone()).or_default();
                        *through = (*through).max(n);
                    }
                }
                runs
            }
            None => Runs::new(),
        };
        for (path, file) in files {
            let lineage = file.job() == factory.job || Some(file.job()) == restored_job.as_deref();
            let covered =
                file.kind.checkpoint().is_some_and(|n| factory.restored.get(&file.run).is_some_and(|&m| n <= m));
            let set_aside = path.parent() == Some(aside.as_path());
            match file.kind {
                Kind::InProgress if file.job() == factory.job => {
                    fs::remove_file(&path).map_err(|e| format!("cannot remove old {}: {e}", path.display()))?
                }
                Kind::InProgress => {}
                _ if !lineage => {}
                _ if covered => {
                    let path = if set_aside { factory.bring_back(&path)? } else { path };
                    if matches!(file.kind, Kind::Pending { .. }) {
                        factory.publish(&path)?;
                    }
                }
                _ if !set_aside => factory.supersede(&path)?,
                _ => {}
            }
        }
        factory.sync_dir()?;
        Ok(factory)
    }

    /// The sink's files in `dir` (its directory, or where it sets files aside).
    fn part_files(&self, dir: &Path) -> Result<Vec<(PathBuf, PartFile)>, String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
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

    /// Moves a file of this job's lineage that the output it resumes from does not hold out of
    /// the directory: the resumed run writes that output again.
    fn supersede(&self, path: &Path) -> Result<(), String> {
        let aside = self.dir.join(SUPERSEDED);
        fs::create_dir_all(&aside).map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
        let target = aside.join(path.file_name().unwrap_or_default());
        tracing::warn!(
            "moving {} to {}: it is not part of the output the job resumes from, which it writes again",
            path.display(),
            aside.display()
        );
        fs::rename(path, &target).map_err(|e| format!("cannot move {} aside: {e}", path.display()))
    }

    /// Moves a set-aside file back into the directory (the output resumed from holds it); returns
    /// its path there.
    fn bring_back(&self, path: &Path) -> Result<PathBuf, String> {
        let target = self.dir.join(path.file_name().unwrap_or_default());
        tracing::info!("bringing {} back: the output the job resumes from holds it", target.display());
        fs::rename(path, &target).map_err(|e| format!("cannot move {} back: {e}", path.display()))?;
        Ok(target)
    }

    /// Makes renames in the directory durable.
    fn sync_dir(&self) -> Result<(), String> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", self.dir.display()))
    }
}

impl SinkFactory for FileSinkFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let direct = self.commit == FileCommit::Direct;
        let run = self.run.clone();
        let mut sink = FileSink { dir: self.dir.clone(), run, subtask: info.index, direct, writer: None };
        if direct {
            sink.writer = Some(sink.open(&direct_name(&self.run, info.index))?);
        }
        Ok(Box::new(sink))
    }

    /// Publishes the pending files its subtasks named at their barriers.
    fn commit(&self, _id: u64, committables: Vec<serde_json::Value>) -> Result<(), String> {
        if committables.is_empty() {
            return Ok(());
        }
        for committable in committables {
            let pending = committable.as_str().filter(|name| committed_name(name).is_some() && !name.contains('/'));
            let pending = pending.ok_or_else(|| format!("{committable} is not a pending file's name (a weir bug)"))?;
            self.publish(&self.dir.join(pending))?;
        }
        self.sync_dir()
    }

    fn committed(&self, id: u64) -> Option<serde_json::Value> {
        if self.commit == FileCommit::Direct {
            return None;
        }
        let mut runs = self.restored.clone();
        runs.insert(self.run.clone(), id);
        Some(serde_json::json!({ "runs": runs }))
    }
}

struct FileSink {
    dir: PathBuf,
    run: String,
    subtask: u32,
    direct: bool,
    /// The open part file (two-phase: the in-progress file, opened at the first event after a
    /// barrier, so that barriers with nothing new leave no empty files).
    writer: Option<(PathBuf, BufWriter<File>)>,
}

impl FileSink {
    /// Creates part file `name`; never an existing one.
    fn open(&self, name: &str) -> Result<(PathBuf, BufWriter<File>), String> {
        let path = self.dir.join(name);
        let file = File::create_new(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok((path, BufWriter::with_capacity(1 << 16, file)))
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
            self.writer = Some(self.open(&in_progress_name(&self.run, self.subtask))?);
        }
        let Some((path, writer)) = &mut self.writer else { return Ok(()) };
        for event in batch.iter() {
            // One line per event: a value with a line break in it would read back as two events.
            if event.value.contains(&b'\n') {
                return Err(format!(
                    "an event value contains a line break, and the file sink writes one line per event \
                     (escape it upstream, for example as JSON): {}",
                    String::from_utf8_lossy(&event.value[..event.value.len().min(80)])
                ));
            }
            writer.write_all(event.value).map_err(|e| write_error(path, e))?;
            writer.write_all(b"\n").map_err(|e| write_error(path, e))?;
        }
        Ok(())
    }

    /// Syncs the in-progress file and renames it pending; its name is what to commit.
    fn pre_commit(&mut self, id: u64, _lasting: bool) -> Result<Option<serde_json::Value>, String> {
        if self.direct {
            return Ok(None);
        }
        let Some(in_progress) = self.sync()? else { return Ok(None) };
        let name = pending_name(&self.run, self.subtask, id);
        fs::rename(&in_progress, self.dir.join(&name))
            .map_err(|e| format!("cannot pre-commit {}: {e}", in_progress.display()))?;
        Ok(Some(name.into()))
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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_fresh_job_leaves_other_jobs_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = run_token(&job_tag("aaaaaaaa"));
        let files = [direct_name(&theirs, 0), pending_name(&theirs, 0, 3), in_progress_name(&theirs, 0)];
        for name in &files {
            fs::write(dir.path().join(name), "x\n").unwrap();
        }
        FileSinkFactory::new(dir.path().to_path_buf(), FileCommit::TwoPhase { restored: None }, "bbbbbbbb").unwrap();
        let mut expected = files.to_vec();
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    /// A rollback's story: run 1 commits 1 and 2, takes savepoint 3 (pending, the job goes on)
    /// and commits 4; run 2 resumes from checkpoint 2 (3 and 4 set aside), commits 5; run 3
    /// restores savepoint 3: 3 comes back and is published, 5 goes aside, 4 stays aside.
    #[test]
    fn a_resumed_job_holds_exactly_the_output_its_checkpoint_records() {
        let dir = tempfile::tempdir().unwrap();
        let job = "aaaaaaaa0000";
        let two_phase = |restored| FileCommit::TwoPhase { restored };
        let first = FileSinkFactory::new(dir.path().to_path_buf(), two_phase(None), job).unwrap();
        let committed = |n: u64| committed_name(&pending_name(&first.run, 0, n)).unwrap().to_string();
        for n in [1, 2, 4] {
            fs::write(dir.path().join(committed(n)), format!("{n}\n")).unwrap();
        }
        fs::write(dir.path().join(pending_name(&first.run, 0, 3)), "3\n").unwrap();
        let (at_two, at_three) = (first.committed(2), first.committed(3));

        let restored = |id, committed| Some(Restored { job_id: job.to_string(), id, committed });
        let second = FileSinkFactory::new(dir.path().to_path_buf(), two_phase(restored(2, at_two)), job).unwrap();
        assert_eq!(names(dir.path()), vec![SUPERSEDED.to_string(), committed(1), committed(2)]);
        let fifth = committed_name(&pending_name(&second.run, 0, 5)).unwrap().to_string();
        fs::write(dir.path().join(&fifth), "5\n").unwrap();

        FileSinkFactory::new(dir.path().to_path_buf(), two_phase(restored(3, at_three)), job).unwrap();
        let mut expected = vec![SUPERSEDED.to_string(), committed(1), committed(2), committed(3)];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
        let mut aside = vec![committed(4), fifth];
        aside.sort();
        assert_eq!(names(&dir.path().join(SUPERSEDED)), aside);
    }
}
