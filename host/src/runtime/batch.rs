//! [`EventBatch`]: the unit that flows through channels. Columnar (one byte buffer plus fixed-size
//! event records) so that a batch of a thousand events costs two allocations, not two thousand.

/// Marks an absent key in [`EventMeta::key_len`].
const NO_KEY: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct EventMeta {
    key_start: u32,
    key_len: u32,
    value_start: u32,
    value_len: u32,
    timestamp: Option<i64>,
}

/// One event, borrowed from a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The key, set by a source or an operator; `hash` edges route on it.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
}

/// A batch of events stored back to back.
#[derive(Default, Clone, Debug)]
pub struct EventBatch {
    bytes: Vec<u8>,
    events: Vec<EventMeta>,
}

impl EventBatch {
    /// An empty batch with room for `events` events of about `bytes` bytes in all.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        EventBatch { bytes: Vec::with_capacity(bytes), events: Vec::with_capacity(events) }
    }

    /// Appends a copy of an event.
    pub fn push(&mut self, event: Event<'_>) {
        let (key_start, key_len) = match event.key {
            Some(key) => (self.append(key), key.len() as u32),
            None => (0, NO_KEY),
        };
        let value_start = self.append(event.value);
        self.events.push(EventMeta {
            key_start,
            key_len,
            value_start,
            value_len: event.value.len() as u32,
            timestamp: event.timestamp,
        });
    }

    /// Appends an event whose value is written by `write` straight into the batch's buffer.
    pub fn push_with(&mut self, key: Option<&[u8]>, timestamp: Option<i64>, write: impl FnOnce(&mut Vec<u8>)) {
        let (key_start, key_len) = match key {
            Some(key) => (self.append(key), key.len() as u32),
            None => (0, NO_KEY),
        };
        let value_start = self.bytes.len() as u32;
        write(&mut self.bytes);
        let value_len = self.bytes.len() as u32 - value_start;
        self.events.push(EventMeta { key_start, key_len, value_start, value_len, timestamp });
    }

    fn append(&mut self, bytes: &[u8]) -> u32 {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        start
    }

    /// The `i`-th event.
    pub fn get(&self, i: usize) -> Event<'_> {
        let m = self.events[i];
        Event {
            key: (m.key_len != NO_KEY).then(|| &self.bytes[m.key_start as usize..(m.key_start + m.key_len) as usize]),
            value: &self.bytes[m.value_start as usize..(m.value_start + m.value_len) as usize],
            timestamp: m.timestamp,
        }
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        (0..self.events.len()).map(|i| self.get(i))
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_in_order() {
        let mut batch = EventBatch::default();
        batch.push(Event { key: Some(b"k1"), value: b"v1", timestamp: Some(7) });
        batch.push(Event { key: None, value: b"", timestamp: None });
        batch.push_with(Some(b""), None, |buf| buf.extend_from_slice(b"written"));
        let events: Vec<_> = batch.iter().collect();
        assert_eq!(
            events,
            vec![
                Event { key: Some(b"k1"), value: b"v1", timestamp: Some(7) },
                Event { key: None, value: b"", timestamp: None },
                Event { key: Some(b""), value: b"written", timestamp: None },
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
    }
}
