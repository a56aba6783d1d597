//! Wall-clock time, injectable: domains ask a [`Clock`] instead of reading the system
//! time, so rules that depend on time (token expiry, and later edit windows, expiring
//! messages, typing timeouts) are unit-tested with a [`ManualClock`].

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(test)]
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }
}

/// The system time in ms, for the edges (a Pong's server time) that have no clock handle.
pub(crate) fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A clock that moves only when told to (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct ManualClock(AtomicU64);

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new(start_ms: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(start_ms)))
    }
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    pub(crate) fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
