//! The rate search of `runtime-events`: ramp the offered rate up in steps
//! until a step loses events, then bisect between the highest rate without
//! loss and the lowest with loss. Pure: the caller measures, this decides.

/// Where loss starts: the state of the search.
#[derive(Debug, Clone)]
pub struct RampSearch {
    step: u64,
    max: u64,
    resolution: u64,
    /// Highest rate measured without loss.
    good: Option<u64>,
    /// Lowest rate measured with loss.
    bad: Option<u64>,
    /// Rate of the first step.
    start: u64,
    tried: Vec<(u64, bool)>,
}

/// Rounds `x` down to a multiple of `r` (`r` > 0).
fn round_down(x: u64, r: u64) -> u64 {
    x / r * r
}

impl RampSearch {
    /// Starts at `start` events/s, goes up by `step` while there is no loss
    /// (never beyond `max`), then bisects until the highest rate without
    /// loss and the lowest with loss are at most `resolution` apart.
    /// Zero values are raised to 1.
    pub fn new(start: u64, step: u64, max: u64, resolution: u64) -> Self {
        let max = max.max(1);
        Self {
            step: step.max(1),
            max,
            resolution: resolution.max(1),
            good: None,
            bad: None,
            start: start.clamp(1, max),
            tried: Vec::new(),
        }
    }

    /// The next rate to measure; `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        let Some(&(last, _)) = self.tried.last() else {
            return Some(self.start);
        };
        let candidate = match (self.good, self.bad) {
            // Ramp: no loss yet.
            (Some(good), None) => {
                if good >= self.max {
                    return None;
                }
                (last + self.step).min(self.max)
            }
            // Bisect (from 0 when even the first step lost events).
            (good, Some(bad)) => {
                let good = good.unwrap_or(0);
                if bad <= good || bad - good <= self.resolution {
                    return None;
                }
                let mid = round_down(good + (bad - good) / 2, self.resolution);
                if mid <= good {
                    good + self.resolution
                } else {
                    mid
                }
            }
            (None, None) => return None,
        };
        if candidate == 0 || self.tried.iter().any(|&(r, _)| r == candidate) {
            return None;
        }
        Some(candidate)
    }

    /// Records the outcome of measuring `rate`: `ok` = no event lost.
    pub fn record(&mut self, rate: u64, ok: bool) {
        self.tried.push((rate, ok));
        if ok {
            self.good = Some(self.good.map_or(rate, |g| g.max(rate)));
        } else {
            self.bad = Some(self.bad.map_or(rate, |b| b.min(rate)));
        }
    }

    /// The highest rate measured without loss.
    pub fn highest_without_loss(&self) -> Option<u64> {
        self.good
    }

    /// The lowest rate measured with loss.
    pub fn lowest_with_loss(&self) -> Option<u64> {
        self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a pipeline that loses events above `capacity`.
    fn search(capacity: u64, start: u64, step: u64, max: u64, res: u64) -> (RampSearch, usize) {
        let mut s = RampSearch::new(start, step, max, res);
        let mut n = 0;
        while let Some(rate) = s.next_rate() {
            n += 1;
            assert!(n < 100, "the search must end");
            s.record(rate, rate <= capacity);
        }
        (s, n)
    }

    #[test]
    fn finds_the_edge_within_the_resolution() {
        for capacity in [55_000, 180_000, 200_000, 234_567, 420_000] {
            let (s, n) = search(capacity, 50_000, 50_000, 1_000_000, 10_000);
            let good = s.highest_without_loss().expect("a good rate");
            let bad = s.lowest_with_loss().expect("a bad rate");
            assert!(
                good <= capacity && bad > capacity,
                "{capacity}: {good}..{bad}"
            );
            assert!(bad - good <= 10_000, "{capacity}: {good}..{bad}");
            assert!(n <= 15, "{capacity}: {n} steps");
        }
    }

    #[test]
    fn stops_at_max_without_loss() {
        let (s, n) = search(u64::MAX, 50_000, 50_000, 120_000, 10_000);
        assert_eq!(s.highest_without_loss(), Some(120_000));
        assert_eq!(s.lowest_with_loss(), None);
        assert_eq!(n, 3, "50k, 100k, then max 120k");
    }

    #[test]
    fn first_step_with_loss_bisects_down() {
        let (s, _) = search(12_000, 50_000, 50_000, 1_000_000, 5_000);
        let good = s.highest_without_loss().expect("a good rate");
        let bad = s.lowest_with_loss().expect("a bad rate");
        assert!(good <= 12_000 && bad > 12_000 && bad - good <= 5_000);
    }

    #[test]
    fn nothing_works() {
        let (s, n) = search(0, 50_000, 50_000, 1_000_000, 10_000);
        assert_eq!(s.highest_without_loss(), None);
        assert_eq!(s.lowest_with_loss(), Some(10_000));
        assert!(n <= 8);
    }

    #[test]
    fn never_repeats_a_rate() {
        let mut s = RampSearch::new(100, 100, 1000, 1);
        // A noisy pipeline: loss at 300, none at 400.
        for (rate, ok) in [(100, true), (200, true), (300, false)] {
            assert_eq!(s.next_rate(), Some(rate));
            s.record(rate, ok);
        }
        s.record(400, true);
        // good (400) is above bad (300): inconsistent, so the search ends.
        assert_eq!(s.next_rate(), None);
    }
}
