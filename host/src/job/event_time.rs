//! The job file's event-time settings: `watermarks` tables of sources and operators.
use super::spec::{WatermarksSpec, duration};
use crate::runtime::WatermarkSpec;

/// The watermarks `spec` asks `owner` (such as "source 'clicks'") to generate. Only a source
/// has an idle timeout: an operator is idle when all its inputs are.
pub(super) fn watermarks(
    owner: &str,
    spec: Option<&WatermarksSpec>,
    source: bool,
) -> Result<Option<WatermarkSpec>, String> {
    let Some(spec) = spec else { return Ok(None) };
    let parse = |key: &str, text: &str| {
        duration(text).ok_or_else(|| {
            format!("{owner}: watermarks {key} \"{text}\" is not a duration of at most 365 days, such as \"5s\"")
        })
    };
    let out_of_orderness = match &spec.out_of_orderness {
        Some(text) => parse("out-of-orderness", text)?,
        None => std::time::Duration::ZERO,
    };
    let idle_timeout = match (&spec.idle_timeout, source) {
        (None, _) => None,
        (Some(text), true) => Some(parse("idle-timeout", text)?).filter(|t| !t.is_zero()),
        (Some(_), false) => {
            return Err(format!(
                "{owner}: `idle-timeout` is a setting of source watermarks (an operator is idle when all its inputs \
                 are); remove it"
            ));
        }
    };
    Ok(Some(WatermarkSpec { out_of_orderness, idle_timeout }))
}
