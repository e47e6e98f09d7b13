//! Expansion of a sweep file into pairs and runs: the cartesian product of the `sweep` lists
//! minus `exclude`, with stable readable ids, checked against the model's context length.
//!
//! `spec` holds what a plan is made of (pairs, prompts, load groups), `expand` builds one
//! from a sweep file and a model, `checks` refuses traces and faults the model cannot have,
//! `estimate` says what it will cost.

mod checks;
pub mod estimate;
mod expand;
mod positions;
mod spec;
#[cfg(test)]
mod tests;

pub use expand::{Support, expand};
pub use positions::DivergenceSearch;
pub use spec::{LoadGroup, LoadKey, Mode, PairSpec, Plan, PlannedPrompt};
