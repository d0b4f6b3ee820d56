//! The retry schedule, as a pure function so that a test can list it whole.
//!
//! First retries come quickly (a full disk or a busy remote often clears in minutes),
//! later ones hours apart, like Postfix's exponential backoff between its minimal and
//! maximal backoff times. Jitter (0.0 to 1.0, chosen by the caller) spreads retries of
//! messages that failed together by up to a fifth of the delay, so they do not return
//! as one burst.

use std::time::Duration;

/// Delay before attempt number `attempt + 1`, after `attempt` failed attempts (from 1).
pub fn delay_for(attempt: u32, jitter: f64) -> Duration {
    const STEPS_S: [u64; 6] = [60, 5 * 60, 15 * 60, 30 * 60, 60 * 60, 2 * 60 * 60];
    let index = (attempt.saturating_sub(1) as usize).min(STEPS_S.len() - 1);
    let base = STEPS_S[index];
    let spread = (base as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_secs(base + spread)
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

    #[test]
    fn the_whole_schedule() {
        let minutes: Vec<u64> = (1..=8).map(|a| delay_for(a, 0.0).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 5, 15, 30, 60, 120, 120, 120]);
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        assert_eq!(delay_for(1, 1.0), Duration::from_secs(72));
        assert_eq!(delay_for(6, 0.5).as_secs(), 7200 + 720);
        assert_eq!(delay_for(0, 7.0), Duration::from_secs(72), "out-of-range input is clamped");
    }
}
