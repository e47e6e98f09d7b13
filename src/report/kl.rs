//! llama.cpp-style KL statistics in report.json: each compared pair's own
//! (`pairs[].kl_stats`) and every position of a dtype's compared pairs pooled, for both
//! kv_aligned modes together and for each apart (`kl_statistics`).

use std::collections::BTreeMap;

use super::schema::{KlGroup, PairJson, compared};
use crate::compare::kl_stats::KlStats;
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};

/// The pooled groups, per dtype: both modes first, then kv_aligned=0 and 1.
pub fn groups(pairs: &[PairJson]) -> Vec<KlGroup> {
    type Key = (Engine, WeightFormat, RunDtype, u8, Option<bool>);
    let mut by: BTreeMap<Key, Vec<&crate::compare::Metrics>> = BTreeMap::new();
    for (p, m) in compared(pairs) {
        let kv = p.spec.kv_aligned;
        let (e, w, d) = (p.spec.engine, p.spec.weights, p.spec.dtype);
        by.entry((e, w, d, 0, None)).or_default().push(m);
        by.entry((e, w, d, 1 + u8::from(kv), Some(kv)))
            .or_default()
            .push(m);
    }
    by.into_iter()
        .filter_map(|((engine, weights, dtype, _, kv_aligned), ms)| {
            Some(KlGroup {
                engine,
                weights,
                dtype,
                kv_aligned,
                pairs: ms.len(),
                stats: KlStats::pooled(ms)?,
            })
        })
        .collect()
}
