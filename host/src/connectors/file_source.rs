//! The `file` source: one event per line (the line without its line break), no key. Its position
//! is the byte offset of the next unread line, so a restore can seek straight to it.
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::runtime::{EventBatch, MAX_EVENT_BYTES, Position, Source, SourceFactory, SubtaskInfo};

/// Creates file source subtasks (the source has parallelism 1).
pub struct FileSourceFactory {
    path: PathBuf,
    rate: Option<f64>,
}

impl FileSourceFactory {
    /// A source reading `path`, at most `rate` events per second when set.
    pub fn new(path: PathBuf, rate: Option<f64>) -> Self {
        FileSourceFactory { path, rate }
    }
}

impl SourceFactory for FileSourceFactory {
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String> {
        let start = resume.map_or(Ok(0), |p| p.to_u64(info))?;
        let mut file = File::open(&self.path).map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        if start > length {
            return Err(format!(
                "cannot resume {} at byte {}: the file has only {length} bytes now",
                self.path.display(),
                start
            ));
        }
        file.seek(SeekFrom::Start(start)).map_err(|e| format!("cannot seek in {}: {e}", self.path.display()))?;
        Ok(Box::new(FileSource {
            path: self.path.clone(),
            reader: BufReader::with_capacity(1 << 16, file),
            position: start,
        }))
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }
}

struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the next line to read.
    position: u64,
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String> {
        let mut line = Vec::with_capacity(256);
        while out.len() < max && !out.is_full() {
            line.clear();
            // At most one event's worth: a file without line breaks must not fill the memory.
            let limit = MAX_EVENT_BYTES as u64 + 2;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("cannot read {} at byte {}: {e}", self.path.display(), self.position))?;
            if n == 0 {
                return Ok(false);
            }
            if n as u64 == limit && !line.ends_with(b"\n") {
                return Err(format!(
                    "the line at byte {} of {} is longer than {} MiB, the largest event weir passes on",
                    self.position,
                    self.path.display(),
                    MAX_EVENT_BYTES >> 20
                ));
            }
            self.position += n as u64;
            let value = line.strip_suffix(b"\n").unwrap_or(&line);
            let value = value.strip_suffix(b"\r").unwrap_or(value);
            out.push(crate::runtime::Event { key: None, value, timestamp: None });
        }
        Ok(true)
    }

    fn position(&self) -> Position {
        Position::from_u64(self.position)
    }
}
