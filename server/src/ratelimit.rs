//! Flood protection: request rate limits per connection and per user, login throttling
//! per user and per source address, and caps on connections and on a user's live
//! sessions. Pure logic with the time passed in, so it is unit-tested without sleeping.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_secs(3600))
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Limits from the config.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub conn_rate: u32,
    pub conn_burst: u32,
    pub user_rate: u32,
    pub user_burst: u32,
    /// Failed logins allowed per user, and login/register attempts per source address,
    /// in each `login_window`.
    pub login_failures_per_user: u32,
    pub logins_per_address: u32,
    pub login_window: Duration,
    pub max_connections: usize,
    pub max_sessions_per_user: usize,
}

const SHARDS: usize = 16;

fn shard_of<K: Hash>(k: &K) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// Counts events in a fixed window per key.
struct WindowCounter<K> {
    shards: Vec<Mutex<HashMap<K, (u32, Instant)>>>,
    window: Duration,
    max: u32,
}

impl<K: Hash + Eq + Clone> WindowCounter<K> {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            window,
            max,
        }
    }

    /// Ok while under the limit; Err(retry after) once it is reached.
    fn check(&self, k: &K, now: Instant) -> Result<(), Duration> {
        let map = self.shards[shard_of(k)].lock().unwrap();
        match map.get(k) {
            Some((n, start))
                if now.saturating_duration_since(*start) < self.window && *n >= self.max =>
            {
                Err(self.window - now.saturating_duration_since(*start))
            }
            _ => Ok(()),
        }
    }

    fn record(&self, k: &K, now: Instant) {
        let mut map = self.shards[shard_of(k)].lock().unwrap();
        if map.len() > 100_000 {
            let w = self.window;
            map.retain(|_, (_, start)| now.saturating_duration_since(*start) < w);
        }
        let e = map.entry(k.clone()).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        e.0 += 1;
    }

    fn clear(&self, k: &K) {
        self.shards[shard_of(k)].lock().unwrap().remove(k);
    }
}

pub struct Limiter {
    pub settings: LimitSettings,
    users: Vec<Mutex<HashMap<String, Bucket>>>,
    login_failures: WindowCounter<String>,
    login_attempts: WindowCounter<IpAddr>,
    connections: Arc<AtomicUsize>,
}

/// A connection slot; frees itself when dropped.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            login_failures: WindowCounter::new(
                settings.login_failures_per_user,
                settings.login_window,
            ),
            login_attempts: WindowCounter::new(settings.logins_per_address, settings.login_window),
            connections: Arc::new(AtomicUsize::new(0)),
            settings,
        }
    }

    /// A bucket for one connection's requests.
    pub fn connection_bucket(&self, now: Instant) -> Bucket {
        Bucket::new(self.settings.conn_rate, self.settings.conn_burst, now)
    }

    /// Takes a connection slot, or None when the server is full.
    pub fn connection(&self) -> Option<ConnectionSlot> {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        if n >= self.settings.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot(self.connections.clone()))
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// One request of `user` (over all their devices).
    pub fn user_request(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.users[shard_of(&user)].lock().unwrap();
        if map.len() > 100_000 {
            // Full buckets carry no state worth keeping.
            let (rate, burst) = (
                self.settings.user_rate as f64,
                self.settings.user_burst as f64,
            );
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        map.entry(user.to_string())
            .or_insert_with(|| Bucket::new(self.settings.user_rate, self.settings.user_burst, now))
            .take(now)
    }

    /// Before a login or register attempt: refuse when the address or the user name has
    /// had too many attempts/failures lately.
    pub fn login_allowed(
        &self,
        user: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        if let Some(a) = addr {
            self.login_attempts.check(&a, now)?;
            self.login_attempts.record(&a, now);
        }
        self.login_failures.check(&user.to_string(), now)
    }

    pub fn login_failed(&self, user: &str, now: Instant) {
        self.login_failures.record(&user.to_string(), now);
    }

    pub fn login_succeeded(&self, user: &str) {
        self.login_failures.clear(&user.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            conn_rate: 10,
            conn_burst: 5,
            user_rate: 10,
            user_burst: 3,
            login_failures_per_user: 3,
            logins_per_address: 5,
            login_window: Duration::from_secs(60),
            max_connections: 2,
            max_sessions_per_user: 2,
        }
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5, t0);
        for _ in 0..5 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(
            b.take(t0 + Duration::from_millis(100)).is_ok(),
            "one token after 1/rate"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn users_are_limited_independently() {
        let l = Limiter::new(settings());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.user_request("a", t0).is_ok());
        }
        assert!(l.user_request("a", t0).is_err());
        assert!(l.user_request("b", t0).is_ok());
    }

    #[test]
    fn login_failures_lock_a_user_for_the_window() {
        let l = Limiter::new(settings());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.login_allowed("victim", None, t0).is_ok());
            l.login_failed("victim", t0);
        }
        let wait = l.login_allowed("victim", None, t0).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(l.login_allowed("other", None, t0).is_ok());
        assert!(
            l.login_allowed("victim", None, t0 + Duration::from_secs(61))
                .is_ok(),
            "window over"
        );
    }

    #[test]
    fn one_address_cannot_try_endlessly() {
        let l = Limiter::new(settings());
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        for i in 0..5 {
            assert!(l.login_allowed(&format!("u{i}"), Some(a), t0).is_ok());
        }
        assert!(l.login_allowed("u9", Some(a), t0).is_err());
        assert!(l
            .login_allowed("u9", Some("127.0.0.10".parse().unwrap()), t0)
            .is_ok());
    }

    #[test]
    fn connection_slots_are_capped_and_freed() {
        let l = Limiter::new(settings());
        let a = l.connection().unwrap();
        let _b = l.connection().unwrap();
        assert!(l.connection().is_none());
        drop(a);
        assert!(l.connection().is_some());
    }
}
