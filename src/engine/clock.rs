//! Where "now" comes from for rules that depend on the time of day (quiet hours, caps), so
//! tests can set it instead of sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// How long a wait for a time of day may last before the clock and the rules are read
    /// again (a tenant's change of quiet hours, a corrected or — in tests — a set clock).
    fn recheck(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that says what it was last set to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tests set the clock: look again soon.
    fn recheck(&self) -> std::time::Duration {
        std::time::Duration::from_millis(200)
    }
}
