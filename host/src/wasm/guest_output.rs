//! What a guest writes to its stdout and stderr: logged line by line under `weir::guest` with
//! its subtask, and its last lines kept, so that a failed call's cause shows what the guest said
//! just before it failed (a Rust panic's message and location, a C `assert`, a Python `print`),
//! where users look (`weir status`, the API, the dashboard) and not only in the host's log.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines kept for a failure's cause.
const KEPT_LINES: usize = 12;
/// The longest line kept or logged whole; a longer one is cut into pieces of this size.
const LINE_LIMIT: usize = 1024;

/// A subtask's guest output: both streams write here.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<Lines>>);

struct Lines {
    /// "'uid' subtask i/p", for log lines.
    subtask: Arc<str>,
    /// The line being written, until its newline.
    partial: Vec<u8>,
    /// The last complete lines, oldest first.
    last: VecDeque<String>,
}

impl GuestOutput {
    pub(crate) fn new(subtask: Arc<str>) -> Self {
        GuestOutput(Arc::new(Mutex::new(Lines { subtask, partial: Vec::new(), last: VecDeque::new() })))
    }

    /// The guest's last lines of output (an unfinished last line included), oldest first, and
    /// forgets them: a later failure shows only what the guest wrote after this one.
    pub(crate) fn take_recent(&self) -> Vec<String> {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !lines.partial.is_empty() {
            let partial = std::mem::take(&mut lines.partial);
            lines.keep(String::from_utf8_lossy(&partial).into_owned());
        }
        lines.last.drain(..).collect()
    }

    fn write(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(bytes);
    }
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let line = match self.partial.is_empty() {
                true => bytes[..end].to_vec(),
                false => [std::mem::take(&mut self.partial).as_slice(), &bytes[..end]].concat(),
            };
            self.log(&line);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= LINE_LIMIT {
            let rest = self.partial.split_off(LINE_LIMIT);
            let piece = std::mem::replace(&mut self.partial, rest);
            self.log(&piece);
        }
    }

    fn log(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        if line.trim().is_empty() {
            return;
        }
        let subtask = &*self.subtask;
        tracing::info!(target: "weir::guest", %subtask, "{line}");
        self.keep(line.into_owned());
    }

    fn keep(&mut self, line: String) {
        if self.last.len() == KEPT_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line);
    }
}

/// `cause`, followed by the guest's last lines of output when it wrote any.
pub(crate) fn with_lines(cause: String, lines: &[String]) -> String {
    if lines.is_empty() {
        return cause;
    }
    let mut text = cause;
    text.push_str("\nthe guest's last output:");
    for line in lines {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

/// Takes a Rust panic out of the guest's last lines (Rust's panic hook writes `thread '…'
/// panicked at FILE:LINE:COL:`, the message on the lines after it, and perhaps a `note:` line):
/// "panicked at FILE:LINE:COL: message". The lines from it on are removed.
pub(crate) fn take_panic(lines: &mut Vec<String>) -> Option<String> {
    let at = lines.iter().rposition(|l| l.contains("panicked at "))?;
    let head = &lines[at];
    let location = head[head.find("panicked at ")? + "panicked at ".len()..].trim_end_matches(':').to_string();
    let message: Vec<&str> =
        lines[at + 1..].iter().map(String::as_str).take_while(|l| !l.starts_with("note: ")).collect();
    let panic = format!("panicked at {location}: {}", message.join("\n"));
    lines.truncate(at);
    Some(panic)
}

/// Frames of a guest's backtrace shown by name.
const NAMED_FRAMES: usize = 16;

/// The frames of a guest's backtrace that have names (in its `name` section), innermost first,
/// demangled, without the Rust runtime's own (the panic and abort machinery, which every Rust
/// panic passes through); frames without names are counted, not listed.
pub(crate) fn backtrace(backtrace: &wasmtime::WasmBacktrace) -> String {
    let frames = backtrace.frames();
    if frames.is_empty() {
        return String::new();
    }
    let named: Vec<_> = frames
        .iter()
        .filter_map(|f| Some((format!("{:#}", rustc_demangle::demangle(f.func_name()?)), f.module().name())))
        .filter(|(name, _)| !is_runtime_frame(name))
        .collect();
    let unnamed = frames.iter().filter(|f| f.func_name().is_none()).count();
    if named.is_empty() && unnamed == 0 {
        return String::new();
    }
    let mut text = String::from("\nguest backtrace:");
    for (name, module) in named.iter().take(NAMED_FRAMES) {
        text.push_str(&format!("\n  at {name}"));
        if let Some(module) = module {
            text.push_str(&format!(" ({module})"));
        }
    }
    if named.len() > NAMED_FRAMES {
        text.push_str(&format!("\n  … {} more", named.len() - NAMED_FRAMES));
    }
    if unnamed > 0 {
        text.push_str(&format!(
            "\n  ({unnamed} of its {} frames have no names: the module was built without its `name` \
             section; for Rust, `strip = \"debuginfo\"` keeps it where `strip = true` drops it)",
            frames.len()
        ));
    }
    text
}

/// A frame of Rust's runtime that every panic or abort passes through, and says nothing of
/// where the guest failed.
fn is_runtime_frame(name: &str) -> bool {
    ["std::", "core::", "alloc::", "__rustc::", "__rust_"].iter().any(|p| name.starts_with(p))
        || matches!(name, "abort" | "rust_panic" | "rust_begin_unwind")
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        GuestOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_joined_across_writes_and_the_unfinished_one() {
        let output = GuestOutput::new(Arc::from("test"));
        for i in 0..20 {
            output.write(format!("line {i}\n").as_bytes());
        }
        output.write(b"thread panicked at src/lib.rs:3:5:\r\nindex out");
        output.write(b" of bounds\nno newline");
        let recent = output.take_recent();
        assert_eq!(recent.len(), KEPT_LINES);
        assert_eq!(
            recent[KEPT_LINES - 3..],
            ["thread panicked at src/lib.rs:3:5:", "index out of bounds", "no newline"]
        );
        assert!(output.take_recent().is_empty(), "taken lines are forgotten");
    }

    #[test]
    fn a_rust_panic_becomes_the_cause_and_leaves_the_lines_before_it() {
        let mut lines: Vec<String> = [
            "processing k1",
            "thread '<unnamed>' panicked at src/lib.rs:21:9:",
            "index out of bounds: the len is 3 but the index is 7",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            take_panic(&mut lines).as_deref(),
            Some("panicked at src/lib.rs:21:9: index out of bounds: the len is 3 but the index is 7")
        );
        assert_eq!(lines, ["processing k1"]);
        assert_eq!(take_panic(&mut lines), None);
        assert_eq!(with_lines("cause".into(), &lines), "cause\nthe guest's last output:\n  | processing k1");
        assert_eq!(with_lines("cause".into(), &[]), "cause");
    }

    #[test]
    fn the_rust_runtime_s_frames_are_left_out() {
        for name in
            ["_RNvNtCs9pv848UzQwQ_4core9panicking9panic_fmt", "_RNvCsfLfy6EI15iL_7___rustc10rust_panic", "abort"]
        {
            assert!(is_runtime_frame(&format!("{:#}", rustc_demangle::demangle(name))), "{name}");
        }
        assert!(!is_runtime_frame("count::Count::process"));
    }

    #[test]
    fn cuts_a_line_without_end() {
        let output = GuestOutput::new(Arc::from("test"));
        output.write(&vec![b'x'; LINE_LIMIT * 3 + 5]);
        let recent = output.take_recent();
        assert_eq!(recent.iter().map(String::len).collect::<Vec<_>>(), [LINE_LIMIT, LINE_LIMIT, LINE_LIMIT, 5]);
    }
}
