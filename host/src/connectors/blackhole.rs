//! The `blackhole` sink: discards events (the runtime counts them), for benchmarks.
use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// Creates blackhole sink subtasks.
pub struct BlackholeSinkFactory;

impl SinkFactory for BlackholeSinkFactory {
    fn create(&self, _info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(Blackhole))
    }
}

struct Blackhole;

impl Sink for Blackhole {
    fn write(&mut self, _batch: &EventBatch) -> Result<(), String> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}
