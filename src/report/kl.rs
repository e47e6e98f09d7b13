//! llama.cpp-style KL statistics in report.json: each compared pair's own
//! (`pairs[].kl_stats`) and every position of a dtype's compared pairs pooled, for both
//! kv_aligned modes together and for each apart (`kl_statistics`).

use std::collections::BTreeMap;

use super::schema::{KlGroup, PairJson};
use crate::compare::kl_stats::KlStats;
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};

/// A compared pair's finite per-position KL and Δp values (f32, as measured) and its top-1
/// flips: what pooling needs of a pair, kept beside the report's copy of it, which drops
/// its per-position series (4 bytes a value here against 8 in the metrics' options).
#[derive(Debug, Default)]
pub struct PairKl {
    kl: Vec<f32>,
    dp: Vec<f32>,
    flips: usize,
}

impl PairKl {
    /// The values of `p`; none unless it was compared.
    pub fn of(p: &PairJson) -> Self {
        match (&p.metrics, p.verdict.is_compared()) {
            (Some(m), true) => PairKl {
                kl: m.per_pos_kl.iter().flatten().copied().collect(),
                dp: m.per_pos_delta_p.iter().flatten().copied().collect(),
                flips: m.top1_flips.len(),
            },
            _ => PairKl::default(),
        }
    }
}

/// The pooled groups, per dtype: both modes first, then kv_aligned=0 and 1. `kls[i]` holds
/// the values of `pairs[i]`; pairs pool in report order.
pub fn groups(pairs: &[PairJson], kls: &[PairKl]) -> Vec<KlGroup> {
    type Key = (Engine, WeightFormat, RunDtype, u8, Option<bool>);
    let mut by: BTreeMap<Key, Vec<&PairKl>> = BTreeMap::new();
    let compared = pairs
        .iter()
        .zip(kls)
        .filter(|(p, _)| p.verdict.is_compared() && p.metrics.is_some());
    for (p, k) in compared {
        let kv = p.spec.kv_aligned;
        let (e, w, d) = (p.spec.engine, p.spec.weights, p.spec.dtype);
        by.entry((e, w, d, 0, None)).or_default().push(k);
        by.entry((e, w, d, 1 + u8::from(kv), Some(kv)))
            .or_default()
            .push(k);
    }
    by.into_iter()
        .filter_map(|((engine, weights, dtype, _, kv_aligned), ks)| {
            let values = |f: fn(&PairKl) -> &[f32]| -> Vec<f64> {
                ks.iter()
                    .flat_map(|k| f(k).iter().map(|&v| f64::from(v)))
                    .collect()
            };
            let flips = ks.iter().map(|k| k.flips).sum();
            Some(KlGroup {
                engine,
                weights,
                dtype,
                kv_aligned,
                pairs: ks.len(),
                stats: KlStats::of_values(values(|k| &k.kl), values(|k| &k.dp), flips)?,
            })
        })
        .collect()
}
