//! The `file` source: one event per line (the line without its line break), no key, and with
//! `timestamp-field` the event time a JSON field of the line holds. Its position is the byte
//! offset of the next unread line, so a restore can seek straight to it.
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::runtime::{EventBatch, MAX_EVENT_BYTES, Position, Source, SourceFactory, SubtaskInfo};

/// Creates file source subtasks (the source has parallelism 1).
pub struct FileSourceFactory {
    path: PathBuf,
    rate: Option<f64>,
    timestamp_field: Option<String>,
}

impl FileSourceFactory {
    /// A source reading `path`, at most `rate` events per second when set, each line's event time
    /// in its JSON field `timestamp_field` when set.
    pub fn new(path: PathBuf, rate: Option<f64>, timestamp_field: Option<String>) -> Self {
        FileSourceFactory { path, rate, timestamp_field }
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
            timestamp_field: self.timestamp_field.clone(),
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
    timestamp_field: Option<String>,
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
            let value = line.strip_suffix(b"\n").unwrap_or(&line);
            let value = value.strip_suffix(b"\r").unwrap_or(value);
            let timestamp = match &self.timestamp_field {
                Some(field) => Some(millis_in(value, field).ok_or_else(|| {
                    format!(
                        "the line at byte {} of {} is not a JSON object with a number of milliseconds in \
                         `{field}` (the source's timestamp-field)",
                        self.position,
                        self.path.display()
                    )
                })?),
                None => None,
            };
            self.position += n as u64;
            out.push(crate::runtime::Event { key: None, value, timestamp });
        }
        Ok(true)
    }

    fn position(&self) -> Position {
        Position::from_u64(self.position)
    }
}

/// The number in field `field` of the JSON object `line`, as whole milliseconds; `None` when the
/// line is no JSON object or the field no number. Other fields are skipped, not built.
fn millis_in(line: &[u8], field: &str) -> Option<i64> {
    let mut deserializer = serde_json::Deserializer::from_slice(line);
    FieldMillis(field).deserialize(&mut deserializer).ok().flatten()
}

/// Finds one field of a JSON object while reading it.
struct FieldMillis<'f>(&'f str);

/// A key of a JSON object: borrowed unless it has escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> DeserializeSeed<'de> for FieldMillis<'_> {
    type Value = Option<i64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<i64>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldMillis<'_> {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.0 {
                let number: serde_json::Number = map.next_value()?;
                found = number.as_i64().or_else(|| number.as_f64().map(|f| f as i64));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::millis_in;

    #[test]
    fn a_field_of_a_json_line_is_its_event_time() {
        assert_eq!(millis_in(br#"{"user":"a","ts":1700000000123,"x":[1,{"ts":2}]}"#, "ts"), Some(1_700_000_000_123));
        assert_eq!(millis_in(br#"{"t\u0073":5}"#, "ts"), Some(5), "an escaped key");
        assert_eq!(millis_in(br#"{"ts":12.9}"#, "ts"), Some(12));
        assert_eq!(millis_in(br#"{"ts":"12"}"#, "ts"), None, "a string is no number");
        assert_eq!(millis_in(br#"{"other":1}"#, "ts"), None);
        assert_eq!(millis_in(b"not json", "ts"), None);
        assert_eq!(millis_in(b"[1,2]", "ts"), None);
    }
}
