//! The tests' random generator (fault proxies, crash loops, PowerFs's torn cuts): small,
//! fast and reproducible from a seed.

/// `name` from the environment parsed as a `T`, else `default` (test knobs such as
/// `TERN_TORTURE_CYCLES`).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed a randomized test replays from `name` in the environment, else a fresh one
/// from the clock (the test prints it, so a failure can be replayed).
pub fn seed_from_env(name: &str) -> u64 {
    env_or(
        name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    )
}

/// Seed used until `set_seed` is called.
pub const DEFAULT_SEED: u64 = 0x7e57_fa17_5eed_0001;

/// xorshift64* generator: small, fast, reproducible; not for anything but tests.
#[derive(Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed, so that small or similar seeds give unrelated streams;
        // xorshift must not start from 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { DEFAULT_SEED } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi) (just `lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo)).max(1)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`; does not draw for p <= 0 or p >= 1 (or NaN), so a
    /// disabled fault does not disturb the sequence the enabled ones see.
    pub fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.next_f64() < p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_reproducible() {
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(draw(0), vec![0; 8]);
        let mut rng = XorShift::new(1);
        assert!(!rng.chance(0.0) && !rng.chance(f64::NAN) && rng.chance(1.0));
        let hits = (0..10_000).filter(|_| rng.chance(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
