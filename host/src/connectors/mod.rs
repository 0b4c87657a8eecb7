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
pub use file_source::FileSourceFactory;
pub use generator::GeneratorSourceFactory;
pub use kafka::{KafkaClient, KafkaSinkConfig, KafkaSinkFactory, KafkaSourceConfig, KafkaSourceFactory, StartFrom};
pub use postgres_sink::{DEFAULT_STATEMENT_TIMEOUT, PostgresMode, PostgresSinkConfig, PostgresSinkFactory, TwoPhase};
pub use stdout::StdoutSinkFactory;
