//! The retry schedule, as a pure function so that a test can list it whole.
//!
//! First retries come quickly (a full disk or a busy remote often clears in minutes),
//! later ones hours apart, like Postfix's exponential backoff between its minimal and
//! maximal backoff times. Jitter (0.0 to 1.0, chosen by the caller) spreads retries of
//! messages that failed together by up to a fifth of the delay, so they do not return
//! as one burst.

use std::time::Duration;

/// Delay before attempt number `attempt + 1`, after `attempt` failed attempts (from 1).
/// `delays` is `queue.retry_delays` (never empty; the last one repeats).
pub fn delay_for(attempt: u32, delays: &[Duration], jitter: f64) -> Duration {
    let index = (attempt.saturating_sub(1) as usize).min(delays.len().saturating_sub(1));
    let base = delays.get(index).copied().unwrap_or(Duration::from_secs(3600));
    base + base.mul_f64(0.2 * jitter.clamp(0.0, 1.0))
}

/// A jitter value from the clock's sub-second noise; good enough to spread retries.
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Duration> {
        [1, 5, 15, 30, 60, 120].map(|m| Duration::from_secs(m * 60)).to_vec()
    }

    #[test]
    fn the_whole_default_schedule() {
        let delays = defaults();
        let minutes: Vec<u64> =
            (1..=8).map(|a| delay_for(a, &delays, 0.0).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 5, 15, 30, 60, 120, 120, 120]);
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        let delays = defaults();
        assert_eq!(delay_for(1, &delays, 1.0), Duration::from_secs(72));
        assert_eq!(delay_for(6, &delays, 0.5).as_secs(), 7200 + 720);
        assert_eq!(delay_for(0, &delays, 7.0), Duration::from_secs(72), "input is clamped");
    }
}
