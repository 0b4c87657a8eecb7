//! Restart strategies (Flink's `restart-strategy.*`): whether, and after how long, a failed job
//! restarts from its latest checkpoint.
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::spec::{RestartSpec, RestartStrategyType};

/// A job's restart strategy, with Flink's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// A failure fails the job.
    None,
    /// Up to `attempts` restarts, each after `delay`.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        delay: Duration,
    },
    /// Delays growing from `initial` by `multiplier` up to `max`; back to `initial` after a run of
    /// `reset_threshold` without failure.
    ExponentialDelay {
        /// First delay.
        initial: Duration,
        /// Longest delay.
        max: Duration,
        /// Growth per failure.
        multiplier: f64,
        /// Failure-free time that resets the backoff.
        reset_threshold: Duration,
        /// Random spread of each delay, as a fraction of it.
        jitter: f64,
        /// Restarts without a reset before the job fails.
        attempts_before_reset: u32,
    },
    /// Restarts after `delay` while at most `max_failures` failures fall within `interval`.
    FailureRate {
        /// Failures allowed per interval.
        max_failures: u32,
        /// The interval.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
}

impl fmt::Display for RestartStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            RestartStrategy::None => write!(f, "restart strategy none"),
            RestartStrategy::FixedDelay { attempts, delay } => {
                write!(f, "fixed-delay restart strategy (attempts {attempts}, delay {})", d(delay))
            }
            RestartStrategy::ExponentialDelay { attempts_before_reset, .. } => {
                write!(f, "exponential-delay restart strategy (attempts-before-reset-backoff {attempts_before_reset})")
            }
            RestartStrategy::FailureRate { max_failures, interval, .. } => write!(
                f,
                "failure-rate restart strategy (max-failures-per-interval {max_failures}, failure-rate-interval {})",
                d(interval)
            ),
        }
    }
}

/// The largest `backoff-multiplier`: beyond it, the second delay is the maximum already.
const MAX_MULTIPLIER: f64 = 1000.0;

fn duration(value: &Option<String>, key: &str, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(text) => super::spec::duration(text).ok_or_else(|| {
            format!("[restart] {key} \"{text}\" is not a duration of at most 365 days, such as \"1s\" or \"500ms\"")
        }),
    }
}

impl RestartStrategy {
    /// The strategy a `[restart]` table names; without one, Flink's default: exponential-delay
    /// when the job checkpoints, none otherwise.
    pub fn from_spec(spec: Option<&RestartSpec>, checkpointing: bool) -> Result<Self, String> {
        let default_type =
            if checkpointing { RestartStrategyType::ExponentialDelay } else { RestartStrategyType::None };
        let default = RestartSpec::default();
        let spec = spec.unwrap_or(&default);
        let kind = spec.strategy.unwrap_or(default_type);
        let (name, allowed): (&str, &[&str]) = match kind {
            RestartStrategyType::None => ("none", &[]),
            RestartStrategyType::FixedDelay => ("fixed-delay", &["attempts", "delay"]),
            RestartStrategyType::ExponentialDelay => (
                "exponential-delay",
                &[
                    "initial-backoff",
                    "max-backoff",
                    "backoff-multiplier",
                    "reset-backoff-threshold",
                    "jitter-factor",
                    "attempts-before-reset-backoff",
                ],
            ),
            RestartStrategyType::FailureRate => {
                ("failure-rate", &["max-failures-per-interval", "failure-rate-interval", "delay"])
            }
        };
        if let Some(key) = spec.keys_set().into_iter().find(|k| !allowed.contains(k)) {
            return Err(format!("[restart] `{key}` is not a setting of the {name} strategy"));
        }
        let second = Duration::from_secs(1);
        Ok(match kind {
            RestartStrategyType::None => RestartStrategy::None,
            RestartStrategyType::FixedDelay => RestartStrategy::FixedDelay {
                attempts: spec.attempts.unwrap_or(1),
                delay: duration(&spec.delay, "delay", second)?,
            },
            RestartStrategyType::ExponentialDelay => {
                let multiplier = spec.backoff_multiplier.unwrap_or(1.5);
                if !(1.0..=MAX_MULTIPLIER).contains(&multiplier) {
                    return Err(format!(
                        "[restart] backoff-multiplier must be at least 1 and at most {MAX_MULTIPLIER}, not {}",
                        if multiplier.abs() < 1e6 { multiplier.to_string() } else { format!("{multiplier:e}") }
                    ));
                }
                let jitter = spec.jitter_factor.unwrap_or(0.1);
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(format!("[restart] jitter-factor must be between 0 and 1, not {jitter}"));
                }
                RestartStrategy::ExponentialDelay {
                    initial: duration(&spec.initial_backoff, "initial-backoff", second)?,
                    max: duration(&spec.max_backoff, "max-backoff", 60 * second)?,
                    multiplier,
                    reset_threshold: duration(&spec.reset_backoff_threshold, "reset-backoff-threshold", 3600 * second)?,
                    jitter,
                    attempts_before_reset: spec.attempts_before_reset_backoff.unwrap_or(u32::MAX),
                }
            }
            RestartStrategyType::FailureRate => RestartStrategy::FailureRate {
                max_failures: spec.max_failures_per_interval.unwrap_or(1),
                interval: duration(&spec.failure_rate_interval, "failure-rate-interval", 60 * second)?,
                delay: duration(&spec.delay, "delay", second)?,
            },
        })
    }
}

impl RestartSpec {
    /// The keys set in the table, besides `strategy`.
    fn keys_set(&self) -> Vec<&'static str> {
        let set = [
            ("attempts", self.attempts.is_some()),
            ("attempts-before-reset-backoff", self.attempts_before_reset_backoff.is_some()),
            ("delay", self.delay.is_some()),
            ("initial-backoff", self.initial_backoff.is_some()),
            ("max-backoff", self.max_backoff.is_some()),
            ("backoff-multiplier", self.backoff_multiplier.is_some()),
            ("reset-backoff-threshold", self.reset_backoff_threshold.is_some()),
            ("jitter-factor", self.jitter_factor.is_some()),
            ("max-failures-per-interval", self.max_failures_per_interval.is_some()),
            ("failure-rate-interval", self.failure_rate_interval.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(key, _)| key).collect()
    }
}

/// A job's failures so far, deciding each restart.
pub struct Restarts {
    strategy: RestartStrategy,
    /// Restarts so far (since the last backoff reset, for exponential-delay).
    restarts: u32,
    backoff: Duration,
    failures: VecDeque<Instant>,
}

impl Restarts {
    /// No failures yet.
    pub fn new(strategy: RestartStrategy) -> Self {
        let backoff = match &strategy {
            RestartStrategy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        Restarts { strategy, restarts: 0, backoff, failures: VecDeque::new() }
    }

    /// The attempt that failed at `now` had run since `started`: how long to wait before the
    /// next attempt, or `None` when the strategy gives up.
    pub fn next_delay(&mut self, started: Instant, now: Instant) -> Option<Duration> {
        let delay = match &self.strategy {
            RestartStrategy::None => return None,
            RestartStrategy::FixedDelay { attempts, delay } => (self.restarts < *attempts).then_some(*delay)?,
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_threshold,
                jitter,
                attempts_before_reset,
                ..
            } => {
                if now.saturating_duration_since(started) >= *reset_threshold {
                    self.restarts = 0;
                    self.backoff = *initial;
                }
                if self.restarts >= *attempts_before_reset {
                    return None;
                }
                let delay = self.backoff;
                // In seconds, so that no multiplier can overflow a `Duration`.
                let grown = Duration::try_from_secs_f64(delay.as_secs_f64() * multiplier).unwrap_or(*max);
                self.backoff = (*max).min(grown);
                // Spread by up to ±jitter, from the clock's low bits (no need for a real RNG).
                let nanos = crate::runtime::now_ms().wrapping_mul(1_000_003) ^ u64::from(std::process::id());
                let noise = xxhash_rust::xxh3::xxh3_64(&nanos.to_le_bytes()) as f64 / u64::MAX as f64;
                delay.mul_f64(1.0 + jitter * (2.0 * noise - 1.0))
            }
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                self.failures.push_back(now);
                while self.failures.front().is_some_and(|t| now.saturating_duration_since(*t) > *interval) {
                    self.failures.pop_front();
                }
                (self.failures.len() <= *max_failures as usize).then_some(*delay)?
            }
        };
        self.restarts += 1;
        Some(delay)
    }

    /// The strategy, for messages.
    pub fn strategy(&self) -> &RestartStrategy {
        &self.strategy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(toml: &str, checkpointing: bool) -> Result<RestartStrategy, String> {
        let spec: RestartSpec = toml::from_str(toml).unwrap();
        RestartStrategy::from_spec(Some(&spec), checkpointing)
    }

    #[test]
    fn defaults_follow_flink() {
        assert_eq!(RestartStrategy::from_spec(None, false), Ok(RestartStrategy::None));
        let s = RestartStrategy::from_spec(None, true).unwrap();
        assert!(
            matches!(s, RestartStrategy::ExponentialDelay { multiplier, attempts_before_reset: u32::MAX, .. } if multiplier == 1.5)
        );
        assert_eq!(
            strategy("strategy = \"fixed-delay\"", false),
            Ok(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::from_secs(1) })
        );
    }

    #[test]
    fn settings_of_another_strategy_are_refused() {
        let e = strategy("strategy = \"fixed-delay\"\ninitial-backoff = \"1s\"", true).unwrap_err();
        assert_eq!(e, "[restart] `initial-backoff` is not a setting of the fixed-delay strategy");
        let e = strategy("strategy = \"exponential-delay\"\nbackoff-multiplier = 0.5", true).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = strategy("strategy = \"fixed-delay\"\ndelay = \"soon\"", true).unwrap_err();
        assert!(e.contains("delay \"soon\""), "{e}");
    }

    #[test]
    fn fixed_delay_gives_up_after_its_attempts() {
        let mut r = Restarts::new(strategy("strategy = \"fixed-delay\"\nattempts = 2\ndelay = \"5ms\"", true).unwrap());
        let t = Instant::now();
        assert_eq!(r.next_delay(t, t), Some(Duration::from_millis(5)));
        assert_eq!(r.next_delay(t, t), Some(Duration::from_millis(5)));
        assert_eq!(r.next_delay(t, t), None);
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets() {
        let toml = "initial-backoff = \"100ms\"\nmax-backoff = \"300ms\"\nbackoff-multiplier = 2.0\n\
                    jitter-factor = 0.0\nreset-backoff-threshold = \"1s\"";
        let mut r = Restarts::new(strategy(toml, true).unwrap());
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(r.next_delay(t, t), Some(ms(100)));
        assert_eq!(r.next_delay(t, t), Some(ms(200)));
        assert_eq!(r.next_delay(t, t), Some(ms(300)));
        assert_eq!(r.next_delay(t, t + ms(10)), Some(ms(300)));
        // A long run without failure resets the backoff.
        assert_eq!(r.next_delay(t, t + Duration::from_secs(2)), Some(ms(100)));
    }

    #[test]
    fn failure_rate_counts_failures_in_the_interval() {
        let toml = "strategy = \"failure-rate\"\nmax-failures-per-interval = 2\nfailure-rate-interval = \"1s\"\ndelay = \"1ms\"";
        let mut r = Restarts::new(strategy(toml, true).unwrap());
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(r.next_delay(t, t), Some(ms(1)));
        assert_eq!(r.next_delay(t, t + ms(100)), Some(ms(1)));
        assert_eq!(r.next_delay(t, t + ms(200)), None);
        let mut r = Restarts::new(strategy(toml, true).unwrap());
        assert_eq!(r.next_delay(t, t), Some(ms(1)));
        assert_eq!(r.next_delay(t, t + ms(100)), Some(ms(1)));
        assert_eq!(r.next_delay(t, t + ms(1500)), Some(ms(1)));
    }
}
