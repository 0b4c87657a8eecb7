//! `--abort-if` conditions, which stop a shadow run or abort a canary by themselves as soon as
//! one holds: `MEASURE>NUMBER` or `MEASURE<NUMBER` over what it counted (`differing>0`,
//! `errors>3`, `out-ratio<0.5`). Each user of them names its measures.
use std::fmt;

/// One condition over measure `M`.
#[derive(Debug, Clone)]
pub struct AbortIf<M> {
    text: String,
    /// What it measures.
    pub measure: M,
    /// `>` (else `<`).
    above: bool,
    bound: f64,
}

impl<M: Copy> AbortIf<M> {
    /// Parses `text`, its measure one of `measures` (name and meaning, for the error too).
    pub fn parse(text: &str, measures: &[(&str, M, &str)]) -> Result<Self, String> {
        let refused = || {
            let known: Vec<String> = measures.iter().map(|(name, _, what)| format!("{name} ({what})")).collect();
            format!(
                "abort condition `{text}` is not MEASURE>NUMBER or MEASURE<NUMBER, MEASURE one of {}",
                known.join(", ")
            )
        };
        let (at, above) = match (text.find('>'), text.find('<')) {
            (Some(at), None) => (at, true),
            (None, Some(at)) => (at, false),
            _ => return Err(refused()),
        };
        let (name, bound) = (text[..at].trim(), text[at + 1..].trim());
        let measure = measures.iter().find(|(known, ..)| *known == name).map(|(_, m, _)| *m).ok_or_else(refused)?;
        let bound: f64 = bound.parse().ok().filter(|b: &f64| b.is_finite()).ok_or_else(refused)?;
        Ok(AbortIf { text: text.trim().to_string(), measure, above, bound })
    }

    /// Whether it holds of `value`, the measure's value now.
    pub fn holds(&self, value: f64) -> bool {
        if self.above { value > self.bound } else { value < self.bound }
    }
}

impl<M> fmt::Display for AbortIf<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_compare_their_measure_with_a_bound_either_way() {
        let measures = [("errors", 0, "failed calls"), ("out-ratio", 1, "output per input")];
        let errors = AbortIf::parse("errors > 2", &measures).unwrap();
        assert_eq!((errors.measure, errors.holds(2.0), errors.holds(3.0)), (0, false, true));
        assert_eq!(errors.to_string(), "errors > 2");
        let ratio = AbortIf::parse("out-ratio<0.5", &measures).unwrap();
        assert_eq!((ratio.measure, ratio.holds(0.4), ratio.holds(0.5)), (1, true, false));
        for bad in ["errors", "errors>x", "lots>1", "errors>1<2", "errors>inf"] {
            let e = AbortIf::parse(bad, &measures).unwrap_err();
            assert!(e.contains("is not MEASURE>NUMBER or MEASURE<NUMBER, MEASURE one of errors (failed calls)"), "{e}");
        }
    }
}
