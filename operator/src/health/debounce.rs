//! Debouncing of probe results (pure): a component's reported health flips only
//! after the opposite result held long enough, so one slow probe does not flap a
//! condition (and, through it, the phase, Events and status writes).
//!
//! Both a probe count and a duration are required: the reconciler probes on its
//! timer but also on every watch event, so two probes can land a second apart, and
//! two results that close together prove nothing about a trend.

use std::time::Duration;

use jiff::Timestamp;

/// When a new observed state replaces the reported one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebounceThresholds {
    /// Consecutive probes that must agree on the new state.
    pub probes: u32,
    /// How long the new state must have held, from its first observation.
    pub held: Duration,
}

impl DebounceThresholds {
    /// Thresholds for probes that run every `interval`: two agreeing probes spanning
    /// at least two intervals (20 s at the default 10 s interval). One interval is
    /// not enough: the first probe of a new state may sit at the end of its interval.
    pub fn for_interval(interval: Duration) -> Self {
        Self { probes: 2, held: interval.saturating_mul(2) }
    }
}

/// A reported state and the verdict it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// The state the conditions show.
    pub healthy: bool,
    /// The message of the latest probe that agreed with `healthy`.
    pub message: String,
    /// When this state was adopted.
    pub since: Timestamp,
}

/// A state observed but not yet reported.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    healthy: bool,
    message: String,
    first_seen: Timestamp,
    probes: u32,
}

/// The debounce state of one component of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Debouncer {
    reported: Option<Reported>,
    candidate: Option<Candidate>,
    /// Whether the component was ever reported healthy: until then it is coming up,
    /// not recovering, and there is no Ready state it could flap out of.
    been_healthy: bool,
}

impl Debouncer {
    /// Feeds one probe result observed at `now` and returns the state to report.
    ///
    /// The first result is adopted at once: with no history there is nothing to flap
    /// from. So is the first healthy result of a component that was never healthy: a
    /// new tenant's etcd reports "0 of 1 member pods running" before its pod starts,
    /// and debouncing its first success would hold every new tenant out of Ready for
    /// two more intervals (time to Ready went from 21 s to 44 s that way). A result
    /// agreeing with the reported state refreshes its message and drops any pending
    /// candidate, so the new state has to hold *consecutively*.
    pub fn observe(
        &mut self,
        healthy: bool,
        message: impl Into<String>,
        now: Timestamp,
        thresholds: DebounceThresholds,
    ) -> &Reported {
        let message = message.into();
        let coming_up = healthy && !self.been_healthy;
        self.been_healthy |= healthy;
        let reported = match self.reported.take() {
            None => Reported { healthy, message, since: now },
            Some(_) if coming_up => {
                self.candidate = None;
                Reported { healthy, message, since: now }
            }
            Some(mut reported) if reported.healthy == healthy => {
                self.candidate = None;
                reported.message = message;
                reported
            }
            Some(reported) => {
                let candidate = match self.candidate.take() {
                    Some(mut candidate) if candidate.healthy == healthy => {
                        candidate.probes += 1;
                        candidate.message = message;
                        candidate
                    }
                    _ => Candidate { healthy, message, first_seen: now, probes: 1 },
                };
                // A clock that went backwards counts as no time held, never as time held.
                let held = Duration::try_from(now.duration_since(candidate.first_seen)).unwrap_or_default();
                if candidate.probes >= thresholds.probes && held >= thresholds.held {
                    Reported { healthy, message: candidate.message, since: now }
                } else {
                    self.candidate = Some(candidate);
                    reported
                }
            }
        };
        self.reported.insert(reported)
    }

    /// The state currently reported, if any probe result was seen.
    pub fn reported(&self) -> Option<&Reported> {
        self.reported.as_ref()
    }

    /// The opposite state being observed and not yet reported: its latest message
    /// and the number of consecutive probes that saw it.
    pub fn pending(&self) -> Option<(&str, u32)> {
        self.candidate.as_ref().map(|candidate| (candidate.message.as_str(), candidate.probes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: DebounceThresholds = DebounceThresholds { probes: 2, held: Duration::from_secs(20) };

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn feed(debouncer: &mut Debouncer, healthy: bool, second: i64) -> bool {
        debouncer.observe(healthy, format!("probe at {second}"), at(second), THRESHOLDS).healthy
    }

    #[test]
    fn thresholds_scale_with_the_interval() {
        assert_eq!(
            DebounceThresholds::for_interval(Duration::from_secs(10)),
            DebounceThresholds { probes: 2, held: Duration::from_secs(20) }
        );
        assert_eq!(DebounceThresholds::for_interval(Duration::from_secs(5)).held, Duration::from_secs(10));
    }

    #[test]
    fn first_result_is_reported_at_once() {
        let mut healthy = Debouncer::default();
        assert!(healthy.reported().is_none());
        assert!(feed(&mut healthy, true, 0));
        assert_eq!(healthy.reported().map(|r| r.since), Some(at(0)));

        let mut failing = Debouncer::default();
        assert!(!feed(&mut failing, false, 0));
    }

    #[test]
    fn one_failed_probe_does_not_flip() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, 0);
        assert!(feed(&mut debouncer, true, 10));
        assert!(feed(&mut debouncer, false, 20), "a single failure is only a candidate");
        assert_eq!(debouncer.pending(), Some(("probe at 20", 1)));
        assert!(feed(&mut debouncer, true, 30));
        assert_eq!(debouncer.pending(), None, "agreement with the reported state drops the candidate");
        assert!(feed(&mut debouncer, false, 40), "the count starts over");
        assert_eq!(debouncer.pending(), Some(("probe at 40", 1)));
    }

    #[test]
    fn failure_flips_after_enough_probes_and_enough_time() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, 0);
        assert!(feed(&mut debouncer, false, 10));
        assert!(feed(&mut debouncer, false, 20), "two probes but only 10 s held");
        assert!(!feed(&mut debouncer, false, 30), "20 s held over three probes: flips");
        let reported = debouncer.reported().expect("reported");
        assert_eq!(reported.since, at(30));
        assert_eq!(reported.message, "probe at 30");
        assert_eq!(debouncer.pending(), None);
    }

    #[test]
    fn quick_successive_probes_do_not_flip_without_time() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, 0);
        for second in 100..110 {
            assert!(feed(&mut debouncer, false, second), "ten probes within 10 s: still healthy");
        }
        assert!(!feed(&mut debouncer, false, 120));
    }

    #[test]
    fn long_held_state_needs_a_second_probe() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, 0);
        // The operator was busy: a single failure, then nothing for a minute.
        assert!(feed(&mut debouncer, false, 10));
        assert!(!feed(&mut debouncer, false, 70), "second probe, 60 s after the first: flips");
    }

    #[test]
    fn the_first_success_of_a_component_coming_up_is_reported_at_once() {
        let mut debouncer = Debouncer::default();
        assert!(!feed(&mut debouncer, false, 0), "no pod yet");
        assert!(!feed(&mut debouncer, false, 5));
        assert!(feed(&mut debouncer, true, 7), "never healthy before: nothing to flap from");
        assert_eq!(debouncer.reported().map(|r| r.since), Some(at(7)));
        assert_eq!(debouncer.pending(), None);
        assert!(feed(&mut debouncer, false, 10), "once healthy, failures are debounced");
    }

    #[test]
    fn recovery_is_debounced_like_failure() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, -30);
        feed(&mut debouncer, false, -20);
        feed(&mut debouncer, false, 0);
        assert_eq!(debouncer.reported().map(|r| r.healthy), Some(false), "failed after being healthy");
        assert!(!feed(&mut debouncer, true, 10));
        assert!(!feed(&mut debouncer, false, 20), "flapping back resets the candidate");
        assert!(!feed(&mut debouncer, true, 30));
        assert!(!feed(&mut debouncer, true, 40));
        assert!(feed(&mut debouncer, true, 50));
        assert_eq!(debouncer.reported().map(|r| r.since), Some(at(50)));
    }

    #[test]
    fn agreeing_probes_refresh_the_message_but_not_the_since_time() {
        let mut debouncer = Debouncer::default();
        debouncer.observe(true, "1 member", at(0), THRESHOLDS);
        debouncer.observe(true, "3 members", at(10), THRESHOLDS);
        let reported = debouncer.reported().expect("reported");
        assert_eq!(reported.message, "3 members");
        assert_eq!(reported.since, at(0));
    }

    #[test]
    fn a_clock_going_backwards_does_not_flip_early() {
        let mut debouncer = Debouncer::default();
        feed(&mut debouncer, true, 100);
        assert!(feed(&mut debouncer, false, 100));
        assert!(feed(&mut debouncer, false, 95), "5 s of backwards clock is not 20 s held");
    }
}
