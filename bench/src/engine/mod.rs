//! The open-loop engine, without knowledge of any system: [`clock`] (one time base for
//! the process), [`schedule`] (intended send times and message ids, pure) and [`run`]
//! (the pacer, the trackers readers feed, one step with its drain).

pub mod clock;
pub mod run;
pub mod schedule;
