//! Quarantine (`on-error = "quarantine"` on an operator, `docs/quarantine.md`): when a guest call
//! fails (a trap, its deadline, its memory limit, an error it returned, a malformed output frame),
//! the operator takes back what the call changed (see [`super::undo`]), opens a fresh instance and
//! calls it again with each half of the call's events, until the events that fail alone are
//! found. Those leave on the side output `quarantine` as records that carry the event, the error
//! and the module; every other event is processed once, in order. Quarantine records are output
//! like any other: committed with the checkpoint, exactly once.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use weir_frame::TimeDomain;

use crate::job::spec::OnErrorSpec;
use crate::runtime::Event;
use crate::state::Timer;

/// The name of the side output that set-aside events leave on.
pub const SIDE_OUTPUT: &str = "quarantine";

/// Events set aside in any minute, by default, before the job fails: a module that fails on
/// every event is a broken release, for a rollback, not for quarantine.
pub const DEFAULT_MAX_PER_MINUTE: u64 = 100;

/// The quarantine of one operator, shared by its subtasks (and a canary's parts).
pub struct Quarantine {
    uid: String,
    /// The index of its `quarantine` side output (after those its module declares).
    pub(crate) output: u8,
    max_per_minute: u64,
    max_total: Option<u64>,
    total: AtomicU64,
    /// When the events of the last minute were set aside.
    last_minute: Mutex<VecDeque<Instant>>,
}

impl Quarantine {
    /// The quarantine of operator `uid`, whose module declares `side_outputs` side outputs.
    pub fn new(uid: &str, side_outputs: usize, spec: &OnErrorSpec) -> Result<Self, String> {
        let output = u8::try_from(side_outputs + 1).map_err(|_| {
            format!("operator '{uid}': its module declares 255 side outputs, and quarantine needs one more")
        })?;
        Ok(Quarantine {
            uid: uid.to_string(),
            output,
            max_per_minute: spec.max_per_minute.unwrap_or(DEFAULT_MAX_PER_MINUTE),
            max_total: spec.max_total,
            total: AtomicU64::new(0),
            last_minute: Mutex::new(VecDeque::new()),
        })
    }

    /// Counts one more event set aside for `error`; past a limit, the error that fails the job,
    /// naming the limit.
    pub(crate) fn admit(&self, error: &str) -> Result<(), String> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let uid = &self.uid;
        if let Some(max) = self.max_total.filter(|max| total > *max) {
            return Err(format!(
                "operator '{uid}' set aside {total} events, over its `on-error` max-total of {max}; the last one \
                 failed with: {error}"
            ));
        }
        let now = Instant::now();
        let mut last_minute = self.last_minute.lock().unwrap_or_else(|e| e.into_inner());
        while last_minute.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60)) {
            last_minute.pop_front();
        }
        last_minute.push_back(now);
        if last_minute.len() as u64 > self.max_per_minute {
            return Err(format!(
                "operator '{uid}' set aside {} events within a minute, over its `on-error` max-per-minute of {} \
                 (a module that fails on most events needs a fix or a rollback, not quarantine); the last one failed \
                 with: {error}",
                last_minute.len(),
                self.max_per_minute
            ));
        }
        Ok(())
    }

    /// The quarantine record of `event`, which failed with `error` in subtask `subtask` of a
    /// module with SHA-256 `module`: one JSON object (see `docs/quarantine.md`).
    pub(crate) fn record(&self, event: &Event<'_>, error: &str, module: &str, subtask: u32) -> Vec<u8> {
        let (value, value_base64) = text_or_base64(Some(event.value));
        let record =
            Record { value, value_base64, timestamp: event.timestamp, ..self.about(event.key, error, module, subtask) };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// The quarantine record of `timer` of `domain`, whose firing failed with `error`: no event,
    /// and `timer` (`{"domain": "event-time", "time": …}`) instead.
    pub(crate) fn timer_record(
        &self,
        domain: TimeDomain,
        timer: &Timer,
        error: &str,
        module: &str,
        subtask: u32,
    ) -> Vec<u8> {
        let timer_record = TimerRecord { domain: crate::state::domain_name(domain), time: timer.time };
        let record = Record { timer: Some(timer_record), ..self.about(Some(&timer.key), error, module, subtask) };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// What every record says: the operator, the subtask, the key, the error and the module;
    /// no event and no timer yet.
    fn about<'a>(&'a self, key: Option<&'a [u8]>, error: &'a str, module: &str, subtask: u32) -> Record<'a> {
        let (key, key_base64) = text_or_base64(key);
        Record {
            operator: &self.uid,
            subtask,
            key,
            key_base64,
            value: None,
            value_base64: None,
            timestamp: None,
            timer: None,
            error,
            module: format!("sha256:{module}"),
            quarantined_at: crate::state::ttl::now_ms(),
        }
    }
}

/// A timer in a quarantine record.
#[derive(serde::Serialize)]
struct TimerRecord {
    domain: &'static str,
    time: i64,
}

/// A quarantine record, its fields in this order.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct Record<'a> {
    operator: &'a str,
    subtask: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    /// For a timer whose firing failed: the timer (there is no event).
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: Option<TimerRecord>,
    error: &'a str,
    module: String,
    quarantined_at: i64,
}

/// `bytes` as text when they are UTF-8, else in base64.
fn text_or_base64(bytes: Option<&[u8]>) -> (Option<&str>, Option<String>) {
    match bytes.map(std::str::from_utf8) {
        None => (None, None),
        Some(Ok(text)) => (Some(text), None),
        Some(Err(_)) => (None, bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))),
    }
}

/// The event a quarantine record holds (its key, value and timestamp), for a source that feeds
/// set-aside events back (`format = "quarantine"`).
#[derive(Debug)]
pub struct Requeued {
    /// The event's key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Its value, the bytes the operator was given.
    pub value: Vec<u8>,
    /// Its event time.
    pub timestamp: Option<i64>,
}

/// Reads quarantine record `line`: the event it holds, or `None` for a timer's record (a timer's
/// firing has no event to give back).
pub fn requeued(line: &[u8]) -> Result<Option<Requeued>, String> {
    let record: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).map_err(|e| format!("not a quarantine record (a JSON object): {e}"))?;
    if record.contains_key("timer") {
        return Ok(None);
    }
    let bytes = |name: &str| -> Result<Option<Vec<u8>>, String> {
        if let Some(value) = record.get(name) {
            let text = value.as_str().ok_or_else(|| format!("its `{name}` is not a string"))?;
            return Ok(Some(text.as_bytes().to_vec()));
        }
        match record.get(&format!("{name}-base64")) {
            None => Ok(None),
            Some(value) => {
                let text = value.as_str().ok_or_else(|| format!("its `{name}-base64` is not a string"))?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("its `{name}-base64` is not base64: {e}"))?;
                Ok(Some(decoded))
            }
        }
    };
    let value = bytes("value")?.ok_or("not a quarantine record: it has no `value`")?;
    let timestamp = match record.get("timestamp") {
        None => None,
        Some(t) => Some(t.as_i64().ok_or("its `timestamp` is not a whole number of milliseconds")?),
    };
    Ok(Some(Requeued { key: bytes("key")?, value, timestamp }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::OnErrorAction;

    fn quarantine(max_per_minute: Option<u64>, max_total: Option<u64>) -> Quarantine {
        let spec = OnErrorSpec { action: OnErrorAction::Quarantine, max_per_minute, max_total };
        Quarantine::new("count", 0, &spec).unwrap()
    }

    #[test]
    fn a_record_gives_back_the_event_it_holds() {
        let q = quarantine(None, None);
        let event = Event { key: Some(&[0xff, 0x00]), value: b"{\"user\":\"bob\"}", timestamp: Some(7) };
        let record = q.record(&event, "the guest trapped in process-batch: boom", "abc", 1);
        let text = String::from_utf8(record.clone()).unwrap();
        assert!(text.starts_with(r#"{"operator":"count","subtask":1,"key-base64":"/wA=","value":"{\"user\":\"bob\"}","timestamp":7,"error":"the guest trapped in process-batch: boom","module":"sha256:abc","#), "{text}");
        let back = requeued(&record).unwrap().unwrap();
        assert_eq!(
            (back.key, back.value, back.timestamp),
            (Some(vec![0xff, 0]), b"{\"user\":\"bob\"}".to_vec(), Some(7))
        );
        assert!(requeued(b"{\"key\":\"a\"}").unwrap_err().contains("no `value`"));
        let timer = Timer { time: 9999, key_group: 3, key: Box::from(&b"alice"[..]) };
        let record = q.timer_record(TimeDomain::EventTime, &timer, "boom", "abc", 0);
        let text = String::from_utf8(record.clone()).unwrap();
        assert!(text.contains(r#""key":"alice","timer":{"domain":"event-time","time":9999},"error":"boom""#), "{text}");
        assert!(requeued(&record).unwrap().is_none(), "a timer holds no event to requeue");
    }

    #[test]
    fn limits_name_themselves() {
        let q = quarantine(Some(2), None);
        assert!(q.admit("e").is_ok() && q.admit("e").is_ok());
        assert!(q.admit("e").unwrap_err().contains("over its `on-error` max-per-minute of 2"));
        let q = quarantine(None, Some(1));
        assert!(q.admit("e").is_ok());
        assert!(
            q.admit("boom")
                .unwrap_err()
                .contains("set aside 2 events, over its `on-error` max-total of 1; the last one failed with: boom")
        );
    }
}
