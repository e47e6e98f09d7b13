//! driftsweep: measures how far the prefill and decode paths of causal language models drift
//! apart. Data flows one way: [`config`] → [`plan`] → [`run`] (through [`sweep`]) →
//! [`compare`] → [`verdict`] → [`store`] → [`report`].

pub mod compare;
pub mod config;
pub mod error;
pub mod model;
pub mod plan;
pub mod verdict;

pub use error::{Error, Result};
