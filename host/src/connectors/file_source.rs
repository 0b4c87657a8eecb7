//! The `file` source: one event per line (the line without its line break), no key, and with
//! `timestamp-field` the event time a JSON field of the line holds. With `format = "quarantine"`
//! each line is a quarantine record (see [`crate::wasm::quarantine`]) and the event the record
//! holds comes out, its key and timestamp with it.
//!
//! It reads in parallel and rescales as Flink's file source does with splits: each subtask reads
//! byte ranges of the file, a line belonging to the range its first byte lies in (a range that
//! starts inside a line begins at the next one). Its position is the ranges it has left, the
//! first starting at its next unread line, so a restore can seek straight to it; a restore at
//! another parallelism merges every subtask's ranges and cuts them anew into as many parts of
//! equal bytes. The last range runs to the end of the file, whatever it is when read.
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::runtime::{EventBatch, MAX_EVENT_BYTES, Position, Source, SourceFactory, SubtaskInfo};

/// Creates file source subtasks.
pub struct FileSourceFactory {
    path: PathBuf,
    rate: Option<f64>,
    timestamp_field: Option<String>,
    /// Its lines are quarantine records, whose events it gives back.
    quarantine: bool,
}

impl FileSourceFactory {
    /// A source reading `path`, at most `rate` events per second when set, each line's event time
    /// in its JSON field `timestamp_field` when set.
    pub fn new(path: PathBuf, rate: Option<f64>, timestamp_field: Option<String>) -> Self {
        FileSourceFactory { path, rate, timestamp_field, quarantine: false }
    }

    /// Reads quarantine records (`format = "quarantine"`), giving back the events they hold.
    pub fn reading_quarantine(mut self, quarantine: bool) -> Self {
        self.quarantine = quarantine;
        self
    }

    fn ranges_of(&self, position: &Position, uid: &str) -> Result<Vec<Range>, String> {
        Ok(ranges_left(position, uid)?.into_iter().map(|(from, to)| Range { from, to }).collect())
    }
}

/// The position of a file source with `ranges` of its file left to read (see [`ranges_left`]).
pub fn file_position(ranges: &[(u64, u64)]) -> Position {
    Position::json(&Ranges { ranges: ranges.iter().map(|&(from, to)| Range { from, to }).collect() })
}

/// The byte ranges of its file a file source `uid` has left to read at `position` (the lines
/// that start in each; `u64::MAX`: to the end of the file).
pub fn ranges_left(position: &Position, uid: &str) -> Result<Vec<(u64, u64)>, String> {
    if let Some(offset) = position.legacy_number() {
        return Ok(vec![(offset, u64::MAX)]);
    }
    Ok(position.read_json::<Ranges>(uid, "a file source's")?.ranges.into_iter().map(|r| (r.from, r.to)).collect())
}

/// Bytes `from..to` of the file: the lines that start there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Range {
    from: u64,
    to: u64,
}

/// A file source's position: the ranges left to read, in order.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ranges {
    ranges: Vec<Range>,
}

impl SourceFactory for FileSourceFactory {
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String> {
        let file = File::open(&self.path).map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let ranges = match resume {
            Some(position) => self.ranges_of(position, &info.uid)?,
            None => vec![Range { from: 0, to: u64::MAX }],
        };
        if let Some(range) = ranges.iter().find(|r| r.from > length) {
            return Err(format!(
                "cannot resume {} at byte {}: the file has only {length} bytes now",
                self.path.display(),
                range.from
            ));
        }
        let mine = part(&ranges, length, info.parallelism, info.index);
        let mut source = FileSource {
            path: self.path.clone(),
            reader: BufReader::with_capacity(1 << 16, file),
            position: 0,
            end: 0,
            left: mine.into(),
            timestamp_field: self.timestamp_field.clone(),
            quarantine: self.quarantine,
        };
        source.next_range()?;
        Ok(Box::new(source))
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn merge_positions(&self, uid: &str, recorded: &[Position]) -> Result<Position, String> {
        let mut ranges = Vec::new();
        for position in recorded {
            ranges.extend(self.ranges_of(position, uid)?);
        }
        ranges.sort_by_key(|r| (r.from, r.to));
        Ok(Position::json(&Ranges { ranges }))
    }
}

/// Part `index` of `parts` of `ranges`: the ranges cut into parts of (nearly) equal bytes, as they
/// lie in a file of `length` bytes; a range's last piece keeps its end (so the one to the end of
/// the file still reads what is appended), and an empty range goes with the part it lies in (the
/// last part when it lies after the last byte).
fn part(ranges: &[Range], length: u64, parts: u32, index: u32) -> Vec<Range> {
    let bytes = |r: &Range| r.to.min(length).saturating_sub(r.from);
    let total: u64 = ranges.iter().map(bytes).sum();
    let share = total.div_ceil(u64::from(parts.max(1))).max(1);
    let last = u64::from(parts.max(1)) - 1;
    // Empty ranges after the last byte (the end of the file, to watch) go to the last part.
    let part_at = |offset: u64| if offset >= total { last } else { (offset / share).min(last) };
    let mut mine = Vec::new();
    let mut at = 0;
    for range in ranges {
        let (mut from, end) = (range.from, range.from + bytes(range));
        loop {
            let owner = part_at(at);
            let room = (owner + 1) * share - at;
            let last_part = owner == last;
            if last_part || end - from <= room {
                if owner == u64::from(index) {
                    mine.push(Range { from, to: range.to });
                }
                at += end - from;
                break;
            }
            if owner == u64::from(index) {
                mine.push(Range { from, to: from + room });
            }
            (from, at) = (from + room, at + room);
        }
    }
    mine
}

struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the next line to read.
    position: u64,
    /// Lines that start before this offset are this subtask's.
    end: u64,
    /// The ranges after the current one.
    left: VecDeque<Range>,
    timestamp_field: Option<String>,
    quarantine: bool,
}

impl FileSource {
    /// Moves to the first line of the next range: the line that starts at its first byte, or else
    /// the one after the line it starts inside. False when no range is left.
    fn next_range(&mut self) -> Result<bool, String> {
        let Some(range) = self.left.pop_front() else {
            (self.position, self.end) = (0, 0);
            return Ok(false);
        };
        let seek = range.from.saturating_sub(1);
        self.reader.seek(SeekFrom::Start(seek)).map_err(|e| format!("cannot seek in {}: {e}", self.path.display()))?;
        self.position = seek;
        if range.from > 0 {
            let skipped = self
                .reader
                .skip_until(b'\n')
                .map_err(|e| format!("cannot read {} at byte {seek}: {e}", self.path.display()))?;
            self.position += skipped as u64;
        }
        self.end = range.to;
        Ok(true)
    }
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String> {
        let mut line = Vec::with_capacity(256);
        while out.len() < max && !out.is_full() {
            if self.position >= self.end && !self.next_range()? {
                return Ok(false);
            }
            if self.position >= self.end {
                continue;
            }
            line.clear();
            // At most one event's worth: a file without line breaks must not fill the memory.
            let limit = MAX_EVENT_BYTES as u64 + 2;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("cannot read {} at byte {}: {e}", self.path.display(), self.position))?;
            if n == 0 {
                // The end of the file. The range to its end is the last one, and stays in the
                // position: a restore reads what is appended meanwhile.
                if self.end == u64::MAX {
                    return Ok(false);
                }
                self.end = self.position;
                continue;
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
            if self.quarantine {
                let event = crate::wasm::quarantine::requeued(value)
                    .map_err(|e| format!("the line at byte {} of {}: {e}", self.position, self.path.display()))?;
                self.position += n as u64;
                // A timer's record has no event to give back.
                if let Some(event) = event {
                    let (key, value, timestamp) = (event.key.as_deref(), &event.value[..], event.timestamp);
                    out.push(crate::runtime::Event { key, value, timestamp });
                }
                continue;
            }
            self.position += n as u64;
            out.push(crate::runtime::Event { key: None, value, timestamp });
        }
        Ok(true)
    }

    fn position(&self) -> Position {
        let current = (self.position < self.end).then_some(Range { from: self.position, to: self.end });
        Position::json(&Ranges { ranges: current.into_iter().chain(self.left.iter().copied()).collect() })
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
    use super::*;

    fn range(from: u64, to: u64) -> Range {
        Range { from, to }
    }

    #[test]
    fn ranges_are_cut_into_parts_of_equal_bytes() {
        let whole = [range(0, u64::MAX)];
        assert_eq!(part(&whole, 100, 1, 0), [range(0, u64::MAX)]);
        assert_eq!(part(&whole, 100, 3, 0), [range(0, 34)]);
        assert_eq!(part(&whole, 100, 3, 1), [range(34, 68)]);
        assert_eq!(part(&whole, 100, 3, 2), [range(68, u64::MAX)]);
        // What two subtasks left: 30 and 10 bytes, cut into two parts of 20.
        let left = [range(20, 50), range(90, u64::MAX)];
        assert_eq!(part(&left, 100, 2, 0), [range(20, 40)]);
        assert_eq!(part(&left, 100, 2, 1), [range(40, 50), range(90, u64::MAX)]);
        // Nothing left but the end of the file: the last part watches it.
        assert_eq!(part(&[range(100, u64::MAX)], 100, 3, 2), [range(100, u64::MAX)]);
        assert!(part(&[range(100, u64::MAX)], 100, 3, 0).is_empty());
    }

    /// Every line is read once, whatever the parallelism and wherever the subtasks stop and go
    /// on at another parallelism.
    #[test]
    fn every_line_is_read_once_across_rescales() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        let lines: Vec<String> = (0..500).map(|i| format!("line {i} {}", "x".repeat(i % 37))).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let factory = FileSourceFactory::new(path, None, None);
        // Each round reads a few lines per subtask.
        let read = super::super::read_across_rescales(&factory, &[2, 3, 1, 4], |index| 7 + index as usize);
        let mut read: Vec<String> = read.into_iter().map(|v| String::from_utf8(v).unwrap()).collect();
        read.sort();
        let mut expected = lines.clone();
        expected.sort();
        assert_eq!(read, expected);
    }

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
