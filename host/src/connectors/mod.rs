//! Sources and sinks, each behind the runtime's [`Source`](crate::runtime::Source) and
//! [`Sink`](crate::runtime::Sink) traits.
//!
//! Layering: depends on `runtime` only.
mod blackhole;
mod file_sink;
mod file_source;
mod generator;
mod kafka;
mod postgres_sink;
mod stdout;

pub use blackhole::BlackholeSinkFactory;
pub use file_sink::{FileCommit, FileSinkFactory, Restored, recorded_in};
pub use file_source::{FileSourceFactory, file_position, ranges_left};
pub use generator::GeneratorSourceFactory;
pub use kafka::{KafkaClient, KafkaSinkConfig, KafkaSinkFactory, KafkaSourceConfig, KafkaSourceFactory, StartFrom};
pub use postgres_sink::{DEFAULT_STATEMENT_TIMEOUT, PostgresMode, PostgresSinkConfig, PostgresSinkFactory, TwoPhase};
pub use stdout::StdoutSinkFactory;

/// Reads the source `factory` makes at each of `parallelisms` in turn, each subtask reading
/// `take(index)` events (in the last round, everything), going on from the positions of the
/// round before, merged; returns every value read. For tests that every event is read once
/// across rescales.
#[cfg(test)]
pub(crate) fn read_across_rescales(
    factory: &dyn crate::runtime::SourceFactory,
    parallelisms: &[u32],
    take: impl Fn(u32) -> usize,
) -> Vec<Vec<u8>> {
    let mut read = Vec::new();
    let mut resume = None;
    for (round, &parallelism) in parallelisms.iter().enumerate() {
        let mut positions = Vec::new();
        for index in 0..parallelism {
            let info = crate::runtime::SubtaskInfo {
                uid: "rescaled".into(),
                index,
                parallelism,
                max_parallelism: 128,
                attempt: 0,
                interrupt: Default::default(),
            };
            let mut source = factory.create(&info, resume.as_ref()).unwrap();
            let mut batch = crate::runtime::EventBatch::default();
            let max = if round + 1 == parallelisms.len() { usize::MAX } else { take(index) };
            while source.poll(&mut batch, max).unwrap() && batch.len() < max {}
            read.extend(batch.iter().map(|e| e.value.to_vec()));
            positions.push(source.position());
        }
        resume = Some(factory.merge_positions("rescaled", &positions).unwrap());
    }
    read
}
