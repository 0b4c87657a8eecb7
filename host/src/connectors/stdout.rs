//! The `stdout` sink: one line per event value on standard output.
use std::io::Write;

use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// Creates stdout sink subtasks.
pub struct StdoutSinkFactory;

impl SinkFactory for StdoutSinkFactory {
    fn create(&self, _info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(StdoutSink { buf: Vec::new() }))
    }
}

struct StdoutSink {
    buf: Vec<u8>,
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: &EventBatch) -> Result<(), String> {
        // One locked write per batch keeps lines of parallel subtasks whole.
        self.buf.clear();
        for event in batch.iter() {
            self.buf.extend_from_slice(event.value);
            self.buf.push(b'\n');
        }
        std::io::stdout().lock().write_all(&self.buf).map_err(|e| format!("cannot write to stdout: {e}"))
    }

    fn finish(&mut self) -> Result<(), String> {
        std::io::stdout().lock().flush().map_err(|e| format!("cannot write to stdout: {e}"))
    }
}
