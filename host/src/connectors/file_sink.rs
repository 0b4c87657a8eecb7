//! The `file` sink: a directory of part files, `part-<subtask>-0`, one line per event value.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// Creates file sink subtasks writing into one directory.
pub struct FileSinkFactory {
    dir: PathBuf,
}

impl FileSinkFactory {
    /// Creates `dir` if needed and removes part files an earlier run left in it, so the directory
    /// holds exactly this run's output.
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        let entries = fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("part-") {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| format!("cannot remove old {}: {e}", path.display()))?;
            }
        }
        Ok(FileSinkFactory { dir })
    }
}

/// The part file of a subtask.
pub fn part_file(dir: &Path, subtask: u32) -> PathBuf {
    dir.join(format!("part-{subtask}-0"))
}

impl SinkFactory for FileSinkFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let path = part_file(&self.dir, info.index);
        let file = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Box::new(FileSink { writer: BufWriter::with_capacity(1 << 16, file), path }))
    }
}

struct FileSink {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl FileSink {
    fn error(&self, e: std::io::Error) -> String {
        format!("cannot write {}: {e}", self.path.display())
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &EventBatch) -> Result<(), String> {
        for event in batch.iter() {
            self.writer.write_all(event.value).map_err(|e| self.error(e))?;
            self.writer.write_all(b"\n").map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        self.writer.flush().map_err(|e| self.error(e))?;
        self.writer.get_ref().sync_all().map_err(|e| self.error(e))
    }
}
