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

    /// Takes the events, leaving an empty batch with room for as many: the batches a subtask
    /// sends are alike in size, and growing the next one from nothing would copy its bytes
    /// several times over (profiles showed those copies at a third of a generator's time).
    pub fn take_sized(&mut self) -> EventBatch {
        let room = EventBatch::with_capacity(self.events.len(), self.bytes.len());
        std::mem::replace(self, room)
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

    /// The offset that [`append_buffer`](Self::append_buffer) will give the next buffer: where
    /// events pushed with [`push_ranges`](Self::push_ranges) before it should point.
    pub(crate) fn next_buffer_offset(&self) -> usize {
        self.bytes.len()
    }

    /// Appends an event whose key and value are byte ranges of a buffer that the caller appends
    /// with [`append_buffer`](Self::append_buffer) before the batch is read.
    pub(crate) fn push_ranges(
        &mut self,
        key: Option<std::ops::Range<usize>>,
        value: std::ops::Range<usize>,
        timestamp: Option<i64>,
    ) {
        let (key_start, key_len) = key.map_or((0, NO_KEY), |k| (k.start as u32, k.len() as u32));
        let (value_start, value_len) = (value.start as u32, value.len() as u32);
        self.events.push(EventMeta { key_start, key_len, value_start, value_len, timestamp });
    }

    /// Appends a buffer that events pushed with [`push_ranges`](Self::push_ranges) point into.
    /// An empty batch takes the buffer over instead of copying it.
    pub(crate) fn append_buffer(&mut self, bytes: Vec<u8>) {
        if self.bytes.is_empty() {
            self.bytes = bytes;
        } else {
            self.bytes.extend_from_slice(&bytes);
        }
    }

    /// Drops the events after the first `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.events.truncate(len);
    }

    fn append(&mut self, bytes: &[u8]) -> u32 {
        let start = self.bytes.len() as u32;
        extend_short(&mut self.bytes, bytes);
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

    /// Bytes of keys and values it holds.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// True once it holds [`BATCH_SIZE`](super::BATCH_SIZE) events or
    /// [`BATCH_BYTES`](super::BATCH_BYTES) bytes: sources and routers pass it on then.
    pub fn is_full(&self) -> bool {
        self.events.len() >= super::BATCH_SIZE || self.bytes.len() >= super::BATCH_BYTES
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

/// What an operator emits for one batch or one advance of time: its main output, and the events
/// of each side output it declares (Flink's `OutputTag`), which only the vertices reading
/// `"uid.name"` receive.
#[derive(Default, Debug)]
pub struct Emitted {
    /// The main output, read by the vertices naming the operator itself.
    pub main: EventBatch,
    /// Side output k+1's events at index k (grown as the operator emits to them).
    pub side: Vec<EventBatch>,
    /// How many of its input events it set aside on its `quarantine` side output (the runner
    /// counts them, and resets this).
    pub quarantined: u64,
}

impl Emitted {
    /// The batch of output `output`: 0 the main one, k side output k.
    pub fn to(&mut self, output: u8) -> &mut EventBatch {
        match output {
            0 => &mut self.main,
            k => {
                let k = k as usize;
                if self.side.len() < k {
                    self.side.resize_with(k, EventBatch::default);
                }
                &mut self.side[k - 1]
            }
        }
    }
}

/// Appends `bytes` to `buf`. Keys and small values are a few bytes long, and for a length not
/// known at compile time `extend_from_slice` calls `memcpy`, whose call and dispatch cost more
/// than such a copy (a quarter of a generator thread's time in profiles). Up to 16 bytes are
/// copied here as two overlapping fixed-size words (as `memcpy` itself does inside), inline.
#[inline]
pub(crate) fn extend_short(buf: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 16 {
        buf.extend_from_slice(bytes);
        return;
    }
    buf.reserve(n);
    let len = buf.len();
    let (src, dst) = (bytes.as_ptr(), buf.spare_capacity_mut().as_mut_ptr().cast::<u8>());
    // SAFETY: `reserve(n)` left at least `n` bytes of spare capacity at `dst`; every read below
    // lies within `bytes` (offsets 0..n) and every write within `dst[0..n]`, which together
    // cover all of `dst[0..n]` before `set_len` makes them part of the vector.
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                *dst = *src;
                *dst.add(n / 2) = *src.add(n / 2);
                *dst.add(n - 1) = *src.add(n - 1);
            }
            4..=7 => {
                dst.cast::<u32>().write_unaligned(src.cast::<u32>().read_unaligned());
                dst.add(n - 4).cast::<u32>().write_unaligned(src.add(n - 4).cast::<u32>().read_unaligned());
            }
            _ => {
                dst.cast::<u64>().write_unaligned(src.cast::<u64>().read_unaligned());
                dst.add(n - 8).cast::<u64>().write_unaligned(src.add(n - 8).cast::<u64>().read_unaligned());
            }
        }
        buf.set_len(len + n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_copies_append_exactly_the_bytes() {
        let source: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let mut buf = b"ab".to_vec();
            extend_short(&mut buf, &source[..n]);
            assert_eq!(buf, [&b"ab"[..], &source[..n]].concat(), "{n} bytes");
        }
    }

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

        // Events by range into a buffer appended afterwards: copied into a non-empty batch...
        let base = batch.next_buffer_offset();
        batch.push_ranges(Some(base + 1..base + 3), base + 3..base + 6, Some(9));
        batch.append_buffer(b"xkeyval".to_vec());
        assert_eq!(batch.get(3), Event { key: Some(b"ke"), value: b"yva", timestamp: Some(9) });
        // ...and taken over by an empty one.
        let mut adopted = EventBatch::default();
        adopted.push_ranges(None, 2..4, None);
        adopted.append_buffer(b"abcd".to_vec());
        assert_eq!(adopted.iter().collect::<Vec<_>>(), vec![Event { key: None, value: b"cd", timestamp: None }]);
        adopted.truncate(0);
        assert!(adopted.is_empty());
        batch.clear();
        assert!(batch.is_empty());
    }
}
