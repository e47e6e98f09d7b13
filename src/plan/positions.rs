//! The compared positions of each pair (`positions:` in the sweep file; docs/design.md,
//! "Compared positions"), decided with the plan so that a bad selection is refused before
//! any model work and every record says which positions it compared.

use std::collections::BTreeMap;

use super::spec::{PairSpec, PlannedPrompt};
use crate::config::{FirstDivergence, LoadedConfig};
use crate::error::Result;
use crate::model::ModelInfo;

/// Sets each pair's compared positions and divergence search from the sweep's `positions:`
/// section; without one, pairs stay as they were (every span position, nothing recorded).
pub(super) fn set_positions(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    pairs: &mut [PairSpec],
    prompts: &BTreeMap<String, PlannedPrompt>,
) -> Result<()> {
    let Some(pc) = &cfg.config.positions else {
        return Ok(());
    };
    let window = model.family.sliding_window();
    for q in pairs {
        let start = prompts.get(&q.prompt).map_or(0, |p| p.len);
        let end = start + q.span;
        let at = pc.positions(&cfg.path, start, end, window, &q.id)?;
        q.positions = pc.selects().then_some(at);
        q.first_divergence = pc.first_divergence;
    }
    Ok(())
}

/// Whether `f` is the default (records without a search carry no field).
pub(super) fn is_compared(f: &FirstDivergence) -> bool {
    *f == FirstDivergence::Compared
}

/// What `first_divergence: search` found for a pair (docs/design.md, "Compared positions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DivergenceSearch {
    /// The first divergent compared position (where the search started), if any.
    pub coarse_first: Option<usize>,
    /// The exact first divergent position: the first position over the limit between the
    /// last agreeing compared position and `coarse_first`.
    pub first_divergent_pos: Option<usize>,
    /// Positions examined by the bisection.
    pub probes: usize,
    /// Extra prefill forwards it made (0 on a model that returns every row: its one prefill
    /// already holds them).
    pub prefills: usize,
    /// Tokens those prefills fed.
    pub prefill_tokens: usize,
}
