//! The serving paths in a report: per (engine, weights, dtype, kv_aligned, path), how the path's
//! logits compare with one-shot prefill, and between paths, whether two sizes of one path gave
//! bit-identical rows (batch invariance, chunk invariance) and where they part. Bit identity
//! between runs comes from their row digests ([`crate::compare::row_digests`]), so it needs no
//! kept logits.

use std::collections::BTreeMap;

use super::numbers::{mean, secs};
use super::schema::{PairJson, PathComparison, PathGroup, ServingPaths};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::path::RunPath;
use crate::verdict::fmt_num;

/// Row digests of each pair's run under test, by pair id.
pub type Digests = BTreeMap<String, Vec<String>>;

type Setting = (Engine, WeightFormat, RunDtype, bool);

fn setting(p: &PairJson) -> Setting {
    (
        p.spec.engine,
        p.spec.weights,
        p.spec.dtype,
        p.spec.kv_aligned,
    )
}

/// The sections, when any pair took a path other than decode.
pub fn analyse(pairs: &[PairJson], digests: &Digests) -> Option<ServingPaths> {
    if pairs.iter().all(|p| p.spec.path.is_default()) {
        return None;
    }
    let mut by: BTreeMap<(Setting, RunPath), Vec<&PairJson>> = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.verdict.is_compared()) {
        by.entry((setting(p), p.spec.path)).or_default().push(p);
    }
    let groups = by
        .iter()
        .map(|(&((engine, weights, dtype, kv_aligned), path), ps)| {
            let ms: Vec<_> = ps.iter().filter_map(|p| p.metrics.as_ref()).collect();
            PathGroup {
                engine,
                weights,
                dtype,
                kv_aligned,
                path,
                pairs: ps.len(),
                failed: ps.iter().filter(|p| p.verdict.is_fail()).count(),
                max_abs_max: ms.iter().map(|m| m.max_abs_diff()).fold(0.0, f32::max),
                kl_max_max: ms.iter().map(|m| m.kl_max()).fold(0.0, f32::max),
                top1_min: ms.iter().map(|m| m.top1_agreement()).fold(1.0, f32::min),
                identical_to_prefill: ms.iter().filter(|m| m.max_abs_diff() == 0.0).count(),
                wall_mean_s: mean(ps.iter().filter_map(|p| p.decode.wall_s.map(|w| w as f32)))
                    .map(f64::from),
                tokens_fed_mean: ps.iter().map(|p| p.decode.tokens_fed as f64).sum::<f64>()
                    / ps.len() as f64,
            }
        })
        .collect();
    let mut comparisons = Vec::new();
    let settings: Vec<Setting> = {
        let mut v: Vec<Setting> = by.keys().map(|(s, _)| *s).collect();
        v.dedup();
        v
    };
    for s in settings {
        let paths: Vec<RunPath> = by
            .keys()
            .filter(|(k, _)| *k == s)
            .map(|(_, p)| *p)
            .collect();
        for (path, against) in comparable(&paths) {
            comparisons.push(compare(s, path, against, &by, digests));
        }
    }
    Some(ServingPaths {
        groups,
        comparisons,
    })
}

/// Which paths to hold against which: each batch size against batch 1 (decode when the sweep
/// has no batch of 1), each batched prefill against a batch of 1, and each chunk size against
/// the next smaller one (decode below the smallest), so that a kernel boundary shows as the
/// first pair of sizes that part.
fn comparable(paths: &[RunPath]) -> Vec<(RunPath, RunPath)> {
    let has = |p: RunPath| paths.contains(&p);
    let mut out = Vec::new();
    let mut chunks: Vec<usize> = paths
        .iter()
        .filter_map(|p| match p {
            RunPath::Chunked(c) => Some(*c),
            _ => None,
        })
        .collect();
    chunks.sort();
    let mut below = has(RunPath::Decode).then_some(RunPath::Decode);
    for c in chunks {
        if let Some(b) = below {
            out.push((RunPath::Chunked(c), b));
        }
        below = Some(RunPath::Chunked(c));
    }
    let one = if has(RunPath::Batched(1)) {
        Some(RunPath::Batched(1))
    } else {
        has(RunPath::Decode).then_some(RunPath::Decode)
    };
    for &p in paths {
        match p {
            RunPath::Batched(b) if b > 1 => out.extend(one.map(|o| (p, o))),
            RunPath::BatchedPrefill(b) if b > 1 && has(RunPath::BatchedPrefill(1)) => {
                out.push((p, RunPath::BatchedPrefill(1)))
            }
            _ => {}
        }
    }
    out
}

type ByPath<'a> = BTreeMap<(Setting, RunPath), Vec<&'a PairJson>>;

fn compare(
    s: Setting,
    path: RunPath,
    against: RunPath,
    by: &ByPath,
    digests: &Digests,
) -> PathComparison {
    let key = |p: &PairJson| (p.spec.prompt.clone(), p.spec.span, p.spec.seed);
    let others: BTreeMap<_, &PairJson> = by
        .get(&(s, against))
        .into_iter()
        .flatten()
        .map(|p| (key(p), *p))
        .collect();
    let (mut pairs, mut identical) = (0, 0);
    let mut first: Option<(usize, String)> = None;
    for p in by.get(&(s, path)).into_iter().flatten() {
        let Some(q) = others.get(&key(p)) else {
            continue;
        };
        let (Some(a), Some(b)) = (digests.get(&p.spec.id), digests.get(&q.spec.id)) else {
            continue;
        };
        if a.is_empty() || a.len() != b.len() {
            continue;
        }
        pairs += 1;
        match a.iter().zip(b).position(|(x, y)| x != y) {
            None => identical += 1,
            Some(i) => {
                let pos = p.decode.span_start + i;
                if first.as_ref().is_none_or(|(f, _)| pos < *f) {
                    first = Some((pos, p.spec.id.clone()));
                }
            }
        }
    }
    PathComparison {
        engine: s.0,
        weights: s.1,
        dtype: s.2,
        kv_aligned: s.3,
        path,
        against,
        pairs,
        identical,
        first_difference: first,
    }
}

/// Statements read off the sections: for each comparison of paths, pooled over the settings,
/// how many pairs gave bit-identical logits and where the first difference lies; for each
/// path, how many pairs were bit-identical to one-shot prefill and what failed.
pub fn observations(sp: &ServingPaths) -> Vec<String> {
    let mut out = Vec::new();
    let mut pooled: BTreeMap<(RunPath, RunPath), Vec<&PathComparison>> = BTreeMap::new();
    for c in &sp.comparisons {
        pooled.entry((c.path, c.against)).or_default().push(c);
    }
    for ((path, against), cs) in pooled {
        let pairs: usize = cs.iter().map(|c| c.pairs).sum();
        if pairs == 0 {
            continue;
        }
        let identical: usize = cs.iter().map(|c| c.identical).sum();
        let mut line = format!(
            "{} gave bit-identical logits to {} in {identical}/{pairs} pairs",
            path.sentence_name(),
            against.sentence_name()
        );
        let apart: Vec<String> = cs
            .iter()
            .filter(|c| c.identical < c.pairs)
            .map(|c| {
                let at = c
                    .first_difference
                    .as_ref()
                    .map_or(String::new(), |(pos, _)| format!(" from position {pos}"));
                format!(
                    "{} {} {} kv{} ({} of {}{at})",
                    c.engine,
                    c.weights,
                    c.dtype,
                    u8::from(c.kv_aligned),
                    c.pairs - c.identical,
                    c.pairs
                )
            })
            .collect();
        if apart.is_empty() {
            line.push('.');
        } else {
            line.push_str(&format!("; they differ in {}.", apart.join(", ")));
        }
        out.push(line);
    }
    let mut per_path: BTreeMap<RunPath, (usize, usize, usize, f32)> = BTreeMap::new();
    for g in &sp.groups {
        let e = per_path.entry(g.path).or_default();
        e.0 += g.pairs;
        e.1 += g.identical_to_prefill;
        e.2 += g.failed;
        e.3 = e.3.max(g.kl_max_max);
    }
    for (path, (pairs, identical, failed, kl)) in per_path {
        out.push(format!(
            "{}: bit-identical to one-shot prefill in {identical}/{pairs} pairs, largest KL {}, {failed} failed.",
            path.sentence_name(),
            fmt_num(kl)
        ));
    }
    out
}

/// Rows of a path's table, in the report's words.
pub fn rows(sp: &ServingPaths, kind: &str) -> Vec<BTreeMap<&'static str, String>> {
    sp.groups
        .iter()
        .filter(|g| g.path.kind() == kind)
        .map(|g| {
            [
                ("engine", g.engine.to_string()),
                ("weights", g.weights.to_string()),
                ("dtype", g.dtype.to_string()),
                ("kv", u8::from(g.kv_aligned).to_string()),
                ("path", g.path.to_string()),
                ("max_abs", fmt_num(g.max_abs_max)),
                ("kl_max", fmt_num(g.kl_max_max)),
                ("top1", format!("{:.4}", g.top1_min)),
                (
                    "identical",
                    format!("{}/{}", g.identical_to_prefill, g.pairs),
                ),
                ("failed", g.failed.to_string()),
                ("wall", g.wall_mean_s.map_or("—".into(), secs)),
                ("tokens", format!("{:.0}", g.tokens_fed_mean)),
            ]
            .into_iter()
            .collect()
        })
        .collect()
}

/// Rows of a path's comparisons with its neighbours.
pub fn comparison_rows(sp: &ServingPaths, kind: &str) -> Vec<BTreeMap<&'static str, String>> {
    sp.comparisons
        .iter()
        .filter(|c| c.path.kind() == kind)
        .map(|c| {
            [
                ("engine", c.engine.to_string()),
                ("weights", c.weights.to_string()),
                ("dtype", c.dtype.to_string()),
                ("kv", u8::from(c.kv_aligned).to_string()),
                (
                    "what",
                    format!(
                        "{} vs {}",
                        c.path.sentence_name(),
                        c.against.sentence_name()
                    ),
                ),
                ("identical", format!("{}/{}", c.identical, c.pairs)),
                (
                    "first",
                    c.first_difference
                        .as_ref()
                        .map_or("—".into(), |(pos, id)| format!("{pos} ({id})")),
                ),
            ]
            .into_iter()
            .collect()
        })
        .collect()
}

/// Titles and notes of the path sections, in report order.
pub const SECTIONS: [(&str, &str, &str); 3] = [
    (
        "chunked",
        "Chunked prefill",
        "The sequence enters in chunks of C tokens, the cache carrying the earlier chunks; every chunk's rows are kept (kv_aligned=1: the prompt's cache is prefill's own and the span is chunked; kv_aligned=0: the whole sequence is chunked from position 0). Chunk 1 is decode; a chunk as long as the sequence is prefill. Each size is held against the next smaller one.",
    ),
    (
        "batched",
        "Batched decode",
        "The sequence is row 0 of a batch of B sequences of its length (the others seeded random ids, so no padding), decoded token by token in lockstep; kv_aligned=1 gives every row the cache of its own prefill alone. Each batch size is held against batch 1 (decode when the sweep has no batch 1).",
    ),
    (
        "batched_prefill",
        "Batched prefill",
        "One forward over a batch of B sequences of the same length; no cache is carried, so kv_aligned does not apply.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PairSpec;
    use crate::report::schema::RunJson;
    use crate::verdict::PairVerdict;

    fn pair(path: RunPath, seed: u64) -> PairJson {
        let spec = PairSpec::new("p", 3, RunDtype::F32, false, seed).via(path);
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let metrics = crate::compare::compare(&a, &a, 2, 10, 1e-4).unwrap();
        let mut decode = RunJson::missing();
        decode.span_start = 10;
        decode.wall_s = Some(0.5);
        PairJson {
            spec,
            verdict: PairVerdict::PassEquiv,
            reason: String::new(),
            metrics: Some(metrics),
            limits: None,
            prefill: RunJson::missing(),
            decode,
            kl_stats: None,
            yardstick: None,
            divergence_search: None,
            reference: None,
        }
    }

    #[test]
    fn sizes_are_held_against_their_neighbours() {
        use RunPath::*;
        let paths = [
            Decode,
            Chunked(1),
            Chunked(8),
            Chunked(9),
            Batched(1),
            Batched(4),
            BatchedPrefill(1),
            BatchedPrefill(4),
        ];
        assert_eq!(
            comparable(&paths),
            vec![
                (Chunked(1), Decode),
                (Chunked(8), Chunked(1)),
                (Chunked(9), Chunked(8)),
                (Batched(4), Batched(1)),
                (BatchedPrefill(4), BatchedPrefill(1)),
            ]
        );
        // Without a batch of 1, decode is the batch of one.
        assert_eq!(
            comparable(&[Decode, Batched(2)]),
            vec![(Batched(2), Decode)]
        );
        assert!(comparable(&[Batched(2)]).is_empty());
    }

    #[test]
    fn digests_say_which_pairs_are_bit_identical_and_where_they_part() {
        let (c8, c9) = (RunPath::Chunked(8), RunPath::Chunked(9));
        let pairs = vec![pair(c8, 0), pair(c9, 0), pair(c8, 1), pair(c9, 1)];
        let d = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut digests = Digests::new();
        digests.insert(pairs[0].spec.id.clone(), d(&["a", "b", "c"]));
        digests.insert(pairs[1].spec.id.clone(), d(&["a", "b", "c"]));
        digests.insert(pairs[2].spec.id.clone(), d(&["a", "b", "c"]));
        // The negative control: seed 1's chunk 9 differs from its chunk 8 at the third row.
        digests.insert(pairs[3].spec.id.clone(), d(&["a", "b", "X"]));
        let sp = analyse(&pairs, &digests).expect("paths other than decode");
        let c = &sp.comparisons[0];
        assert_eq!((c.path, c.against, c.pairs, c.identical), (c9, c8, 2, 1));
        assert_eq!(c.first_difference, Some((12, pairs[3].spec.id.clone())));
        let obs = observations(&sp);
        assert!(
            obs[0].starts_with("chunk 9 gave bit-identical logits to chunk 8 in 1/2 pairs"),
            "{obs:?}"
        );
        assert!(obs[0].contains("1 of 2 from position 12"), "{obs:?}");
        // A sweep of decode alone has no serving-path section.
        assert!(analyse(&[pair(RunPath::Decode, 0)], &digests).is_none());
    }
}
