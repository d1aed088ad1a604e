//! A rate over sliding sample windows, measured as Kafka's `Rate` over a
//! `SampledStat` measures it, so throttle times come out as Kafka's do:
//! `samples` windows of `window_ms`; a window is closed once it is
//! `window_ms` old; samples older than all windows together are reset;
//! the elapsed time is at least `samples - 1` full windows (so a burst
//! from a new client is spread over that long, not over a few ms).

/// Kafka's `quota.window.num` and `quota.window.size.seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub samples: u32,
    pub window_ms: u64,
}

impl Default for WindowConfig {
    fn default() -> WindowConfig {
        WindowConfig { samples: 11, window_ms: 1000 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// One sensor: what one quota entity (its metric tags) used recently.
#[derive(Debug, Clone)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
    last_record_ms: u64,
}

impl Rate {
    pub fn new(now_ms: u64) -> Rate {
        Rate { samples: vec![Sample { start_ms: now_ms, value: 0.0 }], current: 0, last_record_ms: now_ms }
    }

    /// Adds `value` at `now_ms`, opening a new window when the current one is full.
    pub fn record(&mut self, cfg: WindowConfig, value: f64, now_ms: u64) {
        self.purge(cfg, now_ms);
        if now_ms.saturating_sub(self.samples[self.current].start_ms) >= cfg.window_ms {
            self.current = (self.current + 1) % cfg.samples.max(1) as usize;
            let fresh = Sample { start_ms: now_ms, value: 0.0 };
            match self.samples.get_mut(self.current) {
                Some(s) => *s = fresh,
                None => self.samples.push(fresh),
            }
        }
        self.samples[self.current].value += value;
        self.last_record_ms = now_ms;
    }

    /// Resets samples too old to count (Kafka's purgeObsoleteSamples).
    fn purge(&mut self, cfg: WindowConfig, now_ms: u64) {
        let expire = u64::from(cfg.samples) * cfg.window_ms;
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.start_ms) >= expire {
                *s = Sample { start_ms: now_ms, value: 0.0 };
            }
        }
    }

    /// The time the rate is measured over, in ms (Kafka's Rate.windowSize).
    pub fn window_size_ms(&mut self, cfg: WindowConfig, now_ms: u64) -> u64 {
        self.purge(cfg, now_ms);
        let oldest = self.samples.iter().map(|s| s.start_ms).min().unwrap_or(now_ms);
        let mut elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / cfg.window_ms.max(1);
        let min_full = u64::from(cfg.samples.saturating_sub(1));
        if full < min_full {
            elapsed += (min_full - full) * cfg.window_ms;
        }
        elapsed.max(1)
    }

    /// Units per second over the measured window.
    pub fn measure(&mut self, cfg: WindowConfig, now_ms: u64) -> f64 {
        let window = self.window_size_ms(cfg, now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (window as f64 / 1000.0)
    }

    /// How long to wait before the rate is back at `bound`: zero when at or
    /// under it, else (rate - bound) / bound × window (Kafka's QuotaUtils).
    /// A zero bound throttles for a whole window span.
    pub fn throttle_ms(&mut self, cfg: WindowConfig, bound: f64, now_ms: u64) -> u64 {
        let rate = self.measure(cfg, now_ms);
        if rate <= bound {
            return 0;
        }
        let window = self.window_size_ms(cfg, now_ms) as f64;
        if bound <= 0.0 {
            return u64::from(cfg.samples) * cfg.window_ms;
        }
        ((rate - bound) / bound * window).round() as u64
    }

    /// Idle for longer than every window together: it measures zero, and
    /// dropping it loses nothing.
    pub fn is_idle(&self, cfg: WindowConfig, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_record_ms) >= u64::from(cfg.samples) * cfg.window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: WindowConfig = WindowConfig { samples: 11, window_ms: 1000 };

    #[test]
    fn a_first_burst_is_spread_over_ten_windows() {
        let mut r = Rate::new(0);
        r.record(CFG, 20_000.0, 0);
        // 20,000 over at least 10 s: 2,000/s.
        assert_eq!(r.measure(CFG, 0), 2000.0);
        // Quota 1,000/s: (2000 - 1000) / 1000 × 10 s.
        assert_eq!(r.throttle_ms(CFG, 1000.0, 0), 10_000);
        assert_eq!(r.throttle_ms(CFG, 2000.0, 0), 0);
    }

    #[test]
    fn steady_use_at_the_quota_is_not_throttled_and_old_samples_expire() {
        let mut r = Rate::new(0);
        for t in 0..30u64 {
            r.record(CFG, 1000.0, t * 1000);
        }
        // 11 samples of 1,000 over 10 s + the current one's age.
        let rate = r.measure(CFG, 29_000);
        assert!((rate - 1100.0).abs() < 1.0, "{rate}");
        assert_eq!(r.throttle_ms(CFG, 1100.0, 29_000), 0);
        // 11 s later every sample has expired.
        assert_eq!(r.measure(CFG, 40_000), 0.0);
        assert!(r.is_idle(CFG, 40_000));
    }
}
