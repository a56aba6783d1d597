//! One time base for the whole process, so that the intended send time a sender writes
//! into a message and the receive time a reader takes are on the same clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::schedule::Nanos;

static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the time base (monotonic).
pub fn now() -> Nanos {
    base().elapsed().as_nanos() as Nanos
}

/// The tokio instant of a time-base offset, for `sleep_until`.
pub fn instant(at: Nanos) -> tokio::time::Instant {
    tokio::time::Instant::from_std(base() + Duration::from_nanos(at))
}

pub fn secs(ns: Nanos) -> f64 {
    ns as f64 / 1e9
}
