//! driftsweep: measures how far the prefill and decode paths of causal language models drift
//! apart. Data flows one way: [`config`] → [`plan`] → [`run`] (through [`sweep`]) →
//! [`compare`] → [`verdict`] → [`store`] → [`report`].

pub mod bench;
pub mod compare;
pub mod config;
pub mod diff;
pub mod error;
pub mod model;
pub mod plan;
pub mod report;
pub mod run;
pub mod store;
pub mod sweep;
pub mod tokens;
pub mod trace;
pub mod verdict;
pub mod verify;

pub use error::{Error, Result};

/// The candle-core version this binary was built with (read from Cargo.lock by build.rs).
pub const CANDLE_VERSION: &str = env!("DRIFTSWEEP_CANDLE_VERSION");

/// The git commit this binary was built from (`-dirty` appended when tracked files had
/// uncommitted changes), or "unknown".
pub const GIT_COMMIT: &str = env!("DRIFTSWEEP_GIT_COMMIT");
