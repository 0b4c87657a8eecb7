//! The names of the file sink's part files (the module above says what each kind is for):
//! making them, and reading back whose they are and what they hold.
use std::sync::atomic::{AtomicU64, Ordering};

/// Hex digits of a run token: milliseconds, then the job's tag.
const RUN_MS_DIGITS: usize = 11;
const JOB_TAG_DIGITS: usize = 8;

/// The tag of job `job_id` in file names: its first hex digits.
pub(super) fn job_tag(job_id: &str) -> String {
    format!("{:0<width$}", &job_id[..job_id.len().min(JOB_TAG_DIGITS)], width = JOB_TAG_DIGITS)
}

/// A new run token for job tag `job`: unique in this process (milliseconds that only grow), and
/// across processes because a directory is claimed by one job at a time.
pub(super) fn run_token(job: &str) -> String {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = crate::runtime::now_ms();
    let previous = LAST_MS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)));
    let ms = now.max(previous.unwrap_or(0) + 1);
    format!("{ms:0width$x}{job}", width = RUN_MS_DIGITS)
}

/// The kinds of file the sink leaves in its directory.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    InProgress,
    Pending { checkpoint: u64 },
    Committed { checkpoint: u64 },
}

impl Kind {
    /// The barrier a pending or committed file belongs to.
    pub(super) fn checkpoint(&self) -> Option<u64> {
        match self {
            Kind::InProgress => None,
            Kind::Pending { checkpoint } | Kind::Committed { checkpoint } => Some(*checkpoint),
        }
    }
}

/// A file the sink wrote, by its name.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PartFile {
    pub(super) run: String,
    pub(super) kind: Kind,
}

impl PartFile {
    pub(super) fn parse(name: &str) -> Option<PartFile> {
        let (hidden, rest) = match name.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let rest = rest.strip_prefix("part-")?;
        let (run, rest) = rest.split_once('-')?;
        let is_run = run.len() == RUN_MS_DIGITS + JOB_TAG_DIGITS && run.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_run {
            return None;
        }
        let numbers = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty();
        // `<subtask>-<n>`: the barrier n.
        let checkpoint = |rest: &str| {
            let (subtask, n) = rest.split_once('-')?;
            (numbers(subtask) && numbers(n)).then(|| n.parse().ok()).flatten()
        };
        let kind = match (hidden, rest.strip_suffix(".inprogress"), rest.strip_suffix(".pending")) {
            (true, Some(subtask), _) if numbers(subtask) => Kind::InProgress,
            (true, None, Some(rest)) => Kind::Pending { checkpoint: checkpoint(rest)? },
            (false, None, None) => Kind::Committed { checkpoint: checkpoint(rest)? },
            _ => return None,
        };
        Some(PartFile { run: run.to_string(), kind })
    }

    /// The tag of the job that wrote it.
    pub(super) fn job(&self) -> &str {
        &self.run[RUN_MS_DIGITS..]
    }
}

pub(super) fn in_progress_name(run: &str, subtask: u32) -> String {
    format!(".part-{run}-{subtask}.inprogress")
}

pub(super) fn pending_name(run: &str, subtask: u32, checkpoint: u64) -> String {
    format!(".part-{run}-{subtask}-{checkpoint:010}.pending")
}

/// The part file of a subtask when the sink writes directly (no checkpointing).
pub(super) fn direct_name(run: &str, subtask: u32) -> String {
    format!("part-{run}-{subtask}-0")
}

/// The name a pending file is published under.
pub(super) fn committed_name(pending: &str) -> Option<&str> {
    pending.strip_prefix('.')?.strip_suffix(".pending")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let run = run_token(&job_tag("0123456789abcdef"));
        assert_eq!(run.len(), 19);
        assert!(run.ends_with("01234567"));
        assert_ne!(run, run_token(&job_tag("0123456789abcdef")), "every run has a token of its own");
        let parse = |name: &str| PartFile::parse(name).map(|f| f.kind);
        assert_eq!(parse(&in_progress_name(&run, 3)), Some(Kind::InProgress));
        assert_eq!(parse(&pending_name(&run, 3, 12)), Some(Kind::Pending { checkpoint: 12 }));
        let pending = pending_name(&run, 3, 12);
        let committed = committed_name(&pending).unwrap();
        assert_eq!(committed, format!("part-{run}-3-0000000012"));
        assert_eq!(parse(committed), Some(Kind::Committed { checkpoint: 12 }));
        assert_eq!(PartFile::parse(committed).unwrap().job(), "01234567");
        assert_eq!(parse(&direct_name(&run, 1)), Some(Kind::Committed { checkpoint: 0 }));
        assert_eq!(parse("notes.txt"), None);
        assert_eq!(parse("part-0-0"), None, "files of older weirs are not the sink's to touch");
        assert_eq!(parse(&format!(".part-{run}-1-x.pending")), None);
    }
}
