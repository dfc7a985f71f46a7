//! [`TokenBucket`]: the prefetch bandwidth bound. Workers take a member's compressed size in
//! tokens before fetching it; tokens refill at the configured rate up to one second's worth.
//!
//! A request larger than the bucket is still granted once the bucket is full, leaving it in
//! debt (the next requests wait for the debt to be repaid), so a large member never waits
//! forever and the long-run rate still holds: over any span `t` the bytes granted are at most
//! `burst + rate × t` plus one request.
//! Pure: the caller passes the time; the workers sleep for the wait it returns.

use std::time::{Duration, Instant};

/// Bytes per second, bounded.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second; `None`: unlimited.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Instant,
    granted: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `bytes_per_sec` (0: unlimited), holding one second's worth.
    pub fn new(bytes_per_sec: u64, now: Instant) -> TokenBucket {
        let rate = (bytes_per_sec > 0).then_some(bytes_per_sec as f64);
        let burst = rate.unwrap_or(0.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
            granted: 0,
        }
    }

    /// Tokens the bucket holds when full (its burst), in bytes; 0 when unlimited.
    pub fn burst(&self) -> u64 {
        self.burst as u64
    }

    /// Bytes per second, 0 when unlimited.
    pub fn rate(&self) -> u64 {
        self.rate.unwrap_or(0.0) as u64
    }

    /// Bytes granted so far.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let dt = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(self.burst);
        }
        self.last = self.last.max(now);
    }

    /// Takes `bytes` if the bucket allows it now (`Ok`), else says how long to wait before
    /// asking again (`Err`).
    pub fn take(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let Some(rate) = self.rate else {
            self.granted += bytes;
            return Ok(());
        };
        let need = (bytes as f64).min(self.burst);
        if self.tokens >= need {
            self.tokens -= bytes as f64;
            self.granted += bytes;
            return Ok(());
        }
        // Rounded up, and never zero, so that waiting this long always suffices.
        let nanos = ((need - self.tokens) / rate * 1e9).ceil().max(1.0);
        Err(Duration::from_nanos(nanos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The wait, to the microsecond (float arithmetic).
    fn wait(r: Result<(), Duration>) -> u128 {
        let d = r.expect_err("should wait");
        (d.as_nanos() + 500) / 1000
    }

    #[test]
    fn unlimited_grants_everything() {
        let t = Instant::now();
        let mut b = TokenBucket::new(0, t);
        for _ in 0..100 {
            assert_eq!(b.take(1 << 30, t), Ok(()));
        }
        assert_eq!(b.granted(), 100 << 30);
    }

    #[test]
    fn a_full_bucket_grants_its_burst_then_the_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1000, t);
        assert_eq!(b.take(600, t), Ok(()));
        assert_eq!(b.take(400, t), Ok(()));
        // Empty: 100 bytes need 100 ms.
        assert_eq!(wait(b.take(100, t)), 100_000);
        assert_eq!(wait(b.take(100, t + 50 * MS)), 50_000);
        assert_eq!(b.take(100, t + 100 * MS), Ok(()));
        assert_eq!(b.granted(), 1100);
    }

    #[test]
    fn a_request_larger_than_the_burst_waits_for_a_full_bucket_then_leaves_debt() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1000, t);
        assert_eq!(b.take(500, t), Ok(()));
        assert_eq!(wait(b.take(3000, t)), 500_000);
        let t1 = t + 500 * MS;
        assert_eq!(b.take(3000, t1), Ok(()));
        // 2000 bytes of debt, then 1 byte: 2.001 s.
        assert_eq!(wait(b.take(1, t1)), 2_001_000);
    }

    #[test]
    fn granted_bytes_never_exceed_burst_plus_rate_times_time() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10_000, t);
        let mut now = t;
        for i in 0..10_000u64 {
            let size = 100 + (i * 7919) % 5000;
            while let Err(wait) = b.take(size, now) {
                now += wait;
            }
            let elapsed = now.duration_since(t).as_secs_f64();
            let bound = b.burst() as f64 + 10_000.0 * elapsed + 5000.0;
            assert!((b.granted() as f64) <= bound, "{} > {bound}", b.granted());
        }
    }
}
