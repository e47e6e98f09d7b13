//! llama.cpp-style KL statistics in report.json: each compared pair's own
//! (`pairs[].kl_stats`) and every position of a dtype's compared pairs pooled, for both
//! kv_aligned modes together and for each apart (`kl_statistics`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{PairJson, compared};
use crate::compare::kl_stats::KlStats;
use crate::dtype::RunDtype;

/// The pooled statistics of one dtype (and one kv_aligned mode, or both).
#[derive(Debug, Clone, Serialize)]
pub struct KlGroup {
    /// Dtype.
    pub dtype: RunDtype,
    /// kv_aligned, or null for both modes pooled.
    pub kv_aligned: Option<bool>,
    /// Compared pairs pooled.
    pub pairs: usize,
    /// The statistics.
    pub stats: KlStats,
}

/// The pooled groups, per dtype: both modes first, then kv_aligned=0 and 1.
pub fn groups(pairs: &[PairJson]) -> Vec<KlGroup> {
    type Key = (RunDtype, u8, Option<bool>);
    let mut by: BTreeMap<Key, Vec<&crate::compare::Metrics>> = BTreeMap::new();
    for (p, m) in compared(pairs) {
        let kv = p.spec.kv_aligned;
        by.entry((p.spec.dtype, 0, None)).or_default().push(m);
        by.entry((p.spec.dtype, 1 + u8::from(kv), Some(kv)))
            .or_default()
            .push(m);
    }
    by.into_iter()
        .filter_map(|((dtype, _, kv_aligned), ms)| {
            Some(KlGroup {
                dtype,
                kv_aligned,
                pairs: ms.len(),
                stats: KlStats::pooled(ms)?,
            })
        })
        .collect()
}
