//! Per-socket token bucket (PROTOCOL.md "limits"). Owned by the socket's task: no sharing, no lock.

use std::time::Instant;

pub(crate) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    refilled_at: Instant,
    /// Frames refused in a row; sustained abuse closes the socket with 1008.
    pub(crate) strikes: u32,
}

impl TokenBucket {
    pub(crate) fn new(per_sec: f64, burst: f64) -> Self {
        Self { tokens: burst, burst, per_sec, refilled_at: Instant::now(), strikes: 0 }
    }

    /// Takes one token; false when the frame must be refused.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }

    /// Refused frames in a row beyond which the client is abusing, not bursting.
    pub(crate) fn abusive(&self) -> bool {
        f64::from(self.strikes) > self.burst
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20.0, 40.0);
        assert!((0..40).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(50)));
    }

    #[test]
    fn sustained_refusals_are_abuse() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 2.0);
        bucket.take(start);
        bucket.take(start);
        for _ in 0..3 {
            bucket.take(start);
        }
        assert!(bucket.abusive());
    }
}
