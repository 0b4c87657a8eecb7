//! The batch frames of the `weir:operator` contract, specified in `docs/batch-frames.md`: the
//! building blocks both the host and the Rust guest SDK read and write, in one place so that the
//! two sides cannot drift apart. No dependencies, no allocation beyond the caller's buffers.
#![deny(missing_docs)]
use std::fmt;

/// Length marking an absent `opt-bytes`, and the slot of an event without a key-table entry.
pub const NONE: u32 = u32::MAX;

/// Event flag (0.3.0): the event came at or before the operator's watermark.
pub const LATE: u8 = 1;

/// The watermark of an input frame before the operator has one (0.3.0).
pub const NO_WATERMARK: i64 = i64::MIN;

/// Timer domains (0.3.0): when a timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TimeDomain {
    /// When the operator's watermark reaches the timer's time.
    EventTime = 0,
    /// When the host's clock reaches the timer's time.
    ProcessingTime = 1,
}

impl TimeDomain {
    /// The domain a frame's byte names.
    pub fn from_byte(b: u8) -> Option<TimeDomain> {
        match b {
            0 => Some(TimeDomain::EventTime),
            1 => Some(TimeDomain::ProcessingTime),
            _ => None,
        }
    }
}

/// What an output frame's timer operation does (0.3.0): bit 0 set deletes, bits 1.. name the
/// [`TimeDomain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerOp {
    /// The timer's domain.
    pub domain: TimeDomain,
    /// Deletes the timer instead of registering it.
    pub delete: bool,
}

impl TimerOp {
    /// The operation's byte.
    pub fn to_byte(self) -> u8 {
        ((self.domain as u8) << 1) | self.delete as u8
    }

    /// The operation a byte names.
    pub fn from_byte(b: u8) -> Option<TimerOp> {
        Some(TimerOp { domain: TimeDomain::from_byte(b >> 1)?, delete: b & 1 == 1 })
    }
}

/// A frame ended before the item being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// Byte offset of the item that did not fit.
    pub at: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: truncated at byte {}", self.at)
    }
}

impl std::error::Error for Truncated {}

impl From<Truncated> for String {
    fn from(t: Truncated) -> String {
        t.to_string()
    }
}

/// A cursor over a frame. Every read checks bounds: a malformed frame is an error, never a panic.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The next `n` bytes.
    #[inline]
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len()).ok_or(Truncated { at: self.pos })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A little-endian `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        let b = self.fixed(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `bytes` item.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], Truncated> {
        let len = self.u32()?;
        self.fixed(len as usize)
    }

    /// An `opt-bytes` item.
    #[inline]
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, Truncated> {
        match self.u32()? {
            NONE => Ok(None),
            len => self.fixed(len as usize).map(Some),
        }
    }

    /// A byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.fixed(1)?[0])
    }

    /// A little-endian `i64`.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, Truncated> {
        let b = self.fixed(8)?;
        let mut v = [0u8; 8];
        v.copy_from_slice(b);
        Ok(i64::from_le_bytes(v))
    }

    /// An `opt-ts` item.
    #[inline]
    pub fn opt_ts(&mut self) -> Result<Option<i64>, Truncated> {
        let b = self.fixed(9)?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[1..9]);
        Ok((b[0] != 0).then_some(i64::from_le_bytes(ts)))
    }
}

/// Writes a little-endian `u32`.
#[inline]
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `i64`.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a `bytes` item.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Writes an `opt-bytes` item.
#[inline]
pub fn put_opt_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => put_bytes(out, bytes),
        None => put_u32(out, NONE),
    }
}

/// Writes an `opt-ts` item.
#[inline]
pub fn put_opt_ts(out: &mut Vec<u8>, ts: Option<i64>) {
    out.push(ts.is_some() as u8);
    out.extend_from_slice(&ts.unwrap_or(0).to_le_bytes());
}

/// Overwrites the `u32` at `at`: a count or length written before it was known.
#[inline]
pub fn patch_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes an `opt-bytes` whose content `fill` appends; `fill` returns false for *absent*.
#[inline]
pub fn put_opt_bytes_with(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>) -> bool) -> usize {
    let at = out.len();
    put_u32(out, 0);
    if fill(out) {
        let len = out.len() - at - 4;
        patch_u32(out, at, len as u32);
        len
    } else {
        out.truncate(at);
        put_u32(out, NONE);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let mut out = Vec::new();
        put_u32(&mut out, 7);
        put_bytes(&mut out, b"abc");
        put_opt_bytes(&mut out, None);
        put_opt_bytes(&mut out, Some(b""));
        put_opt_ts(&mut out, Some(-5));
        put_opt_ts(&mut out, None);
        out.push(LATE);
        put_i64(&mut out, NO_WATERMARK);
        put_opt_bytes_with(&mut out, |b| {
            b.extend_from_slice(b"xy");
            true
        });
        put_opt_bytes_with(&mut out, |b| {
            b.extend_from_slice(b"discarded");
            false
        });
        let mut r = Reader::new(&out);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.bytes(), Ok(&b"abc"[..]));
        assert_eq!(r.opt_bytes(), Ok(None));
        assert_eq!(r.opt_bytes(), Ok(Some(&b""[..])));
        assert_eq!(r.opt_ts(), Ok(Some(-5)));
        assert_eq!(r.opt_ts(), Ok(None));
        assert_eq!(r.u8(), Ok(LATE));
        assert_eq!(r.i64(), Ok(NO_WATERMARK));
        assert_eq!(r.opt_bytes(), Ok(Some(&b"xy"[..])));
        assert_eq!(r.opt_bytes(), Ok(None));
        assert!(r.is_at_end());
    }

    #[test]
    fn timer_ops_round_trip_and_unknown_bytes_are_none() {
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            for delete in [false, true] {
                let op = TimerOp { domain, delete };
                assert_eq!(TimerOp::from_byte(op.to_byte()), Some(op));
            }
        }
        assert_eq!(TimerOp::from_byte(4), None);
        assert_eq!(TimeDomain::from_byte(2), None);
    }

    #[test]
    fn truncation_is_an_error_with_its_offset() {
        let mut out = Vec::new();
        put_u32(&mut out, 10);
        out.extend_from_slice(b"short");
        let mut r = Reader::new(&out);
        assert_eq!(r.bytes(), Err(Truncated { at: 4 }));
        assert_eq!(Reader::new(&[1, 2]).u32(), Err(Truncated { at: 0 }));
        assert_eq!(Reader::new(&[1]).opt_ts(), Err(Truncated { at: 0 }));
    }
}
