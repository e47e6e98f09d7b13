//! `driftsweep run CONFIG --shard K/N`: a deterministic partition of a plan's pairs into N
//! shards, so that N processes (a Slurm job array, a Kubernetes Indexed Job) can each run one
//! part of the sweep into its own results directory, and `driftsweep merge` can put them back
//! together.
//!
//! # The partition
//!
//! It depends on the plan alone (pair ids, spans, prompt lengths, continuation mode), never on
//! time, host or hash order, so every process of an array computes the same partition and a
//! re-run gives it again. It balances an estimate of each shard's cost in forward tokens (the
//! tokens pushed through the model):
//!
//! - a prefill of prompt P and span S costs P + S;
//! - a kv_aligned=true decode costs P + S (the cache-building forward) + S (the steps);
//! - a kv_aligned=false decode costs P + S single-token steps;
//! - a sampled or greedy continuation of a (prompt, seed) costs P + L once per process that
//!   needs it (L = the plan's longest span), plus the f32 reference model; random ones cost 0.
//!
//! The kv_aligned twins of one (prompt, span, dtype, seed) are never split: the second reuses
//! the first's prefill. A whole (prompt, seed) group stays in one shard, so its continuation
//! is generated once, unless a group is larger than a fair share (total / N) or keeping the
//! groups whole leaves the shards further than [`BALANCE_SLACK`] above the fair share; then
//! the largest groups are split into their twin units, one by one, and each shard that holds
//! part of a split group pays for its continuation again. Items are placed largest first
//! (ties by id) on the shard where they cost least (ties: the lowest index). Of the candidate
//! partitions (0, 1, 2, … groups split) the one with the smallest largest shard wins, the one
//! with fewer splits on a tie.
//!
//! Every shard still generates its continuations at the whole plan's longest span, so its
//! token ids, and therefore its metrics, are those of a single-process run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::{ContinuationMode, LoadedConfig};
use crate::error::{Error, Result};
use crate::plan::{PairSpec, Plan};
use crate::store::Manifest;
pub use crate::store::shards::{Shard, ShardInfo, ShardedPair};

/// How far above the fair share (total / N) the largest shard may be before whole (prompt,
/// seed) groups are split: 10 %.
pub const BALANCE_SLACK: f64 = 0.10;

/// The results directory of `shard` when `--out` does not name one: `<base>.shards/K-of-N`,
/// next to the directory `driftsweep merge` will write.
pub fn shard_dir(base: &Path, shard: Shard) -> PathBuf {
    shards_root(base).join(format!("{}-of-{}", shard.index, shard.count))
}

/// `<base>.shards`: where the shards of the sweep whose merged results go to `base` live.
pub fn shards_root(base: &Path) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".shards");
    PathBuf::from(s)
}

/// A partition: the shard of every pair (by plan index) and each shard's estimated cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Shard index per pair, in plan order.
    pub shard_of: Vec<usize>,
    /// Estimated cost per shard, forward tokens.
    pub costs: Vec<u64>,
    /// How many (prompt, seed) groups were split over more than one shard.
    pub split_groups: usize,
}

/// Twin unit: the pairs of one (prompt, seed, dtype, span), which share a prefill.
#[derive(Debug)]
struct Unit {
    key: String,
    pairs: Vec<usize>,
    cost: u64,
}

/// One (prompt, seed) group.
#[derive(Debug)]
struct Group {
    key: String,
    units: Vec<Unit>,
    /// The continuation's cost, paid once per shard holding any of the group.
    overhead: u64,
}

impl Group {
    fn cost(&self) -> u64 {
        self.overhead + self.units.iter().map(|u| u.cost).sum::<u64>()
    }
}

/// (prompt, seed).
type GroupKey = (String, u64);
/// (dtype, span) inside a group.
type UnitKey = (String, usize);

/// Estimated forward tokens of one pair's runs: see the module documentation.
fn pair_cost(prompt_len: usize, p: &PairSpec, prefill_shared: bool) -> u64 {
    let (pl, s) = (prompt_len as u64, p.span as u64);
    let prefill = if prefill_shared { 0 } else { pl + s };
    let decode = if p.kv_aligned { pl + 2 * s } else { pl + s };
    prefill + decode
}

fn groups(
    pairs: &[PairSpec],
    prompt_len: &BTreeMap<String, usize>,
    mode: ContinuationMode,
) -> Vec<Group> {
    let longest = {
        let mut m: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for p in pairs {
            let e = m.entry((p.prompt.clone(), p.seed)).or_insert(0);
            *e = (*e).max(p.span);
        }
        m
    };
    // BTreeMaps keyed by ids: the order never depends on hashing.
    let mut by_group: BTreeMap<GroupKey, BTreeMap<UnitKey, Vec<usize>>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        by_group
            .entry((p.prompt.clone(), p.seed))
            .or_default()
            .entry((p.dtype.to_string(), p.span))
            .or_default()
            .push(i);
    }
    by_group
        .into_iter()
        .map(|((prompt, seed), units)| {
            let pl = prompt_len.get(&prompt).copied().unwrap_or(0);
            let overhead = match mode {
                ContinuationMode::Random => 0,
                _ => (pl + longest[&(prompt.clone(), seed)]) as u64,
            };
            Group {
                key: format!("{prompt}/seed{seed}"),
                units: units
                    .into_iter()
                    .map(|((dtype, span), idx)| Unit {
                        key: format!("{prompt}/seed{seed}/{dtype}/s{span:09}"),
                        cost: idx
                            .iter()
                            .enumerate()
                            .map(|(k, &i)| pair_cost(pl, &pairs[i], k > 0))
                            .sum(),
                        pairs: idx,
                    })
                    .collect(),
                overhead,
            }
        })
        .collect()
}

/// Places whole groups, and the units of the groups in `split`, largest first, each where it
/// costs least.
fn place(groups: &[Group], split: &BTreeSet<usize>, n: usize, shard_of: &mut [usize]) -> Vec<u64> {
    // (cost without overhead, key, group, unit or None for the whole group)
    let mut items: Vec<(u64, &str, usize, Option<usize>)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        if split.contains(&g) {
            for (u, unit) in group.units.iter().enumerate() {
                items.push((unit.cost, &unit.key, g, Some(u)));
            }
        } else {
            items.push((group.cost(), &group.key, g, None));
        }
    }
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut load = vec![0u64; n];
    // Shards by (load, index): the cheapest is the first. A unit costs its group's overhead
    // more on a shard that does not yet hold the group, so the best shard is the cheapest
    // overall or one of the few already holding the group: never a scan of all N shards,
    // which made `slurm --shards N` quadratic.
    let mut by_load: BTreeSet<(u64, usize)> = (0..n).map(|s| (0, s)).collect();
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (cost, _, g, unit) in items {
        let extra = |s: usize| match unit {
            Some(_) if !holders[g].contains(&s) => cost + groups[g].overhead,
            _ => cost,
        };
        let cheapest = by_load.first().map_or(0, |&(_, s)| s);
        let best = std::iter::once(cheapest)
            .chain(holders[g].iter().copied())
            .min_by_key(|&s| (load[s] + extra(s), s))
            .unwrap_or(0);
        let added = extra(best);
        by_load.remove(&(load[best], best));
        load[best] += added;
        by_load.insert((load[best], best));
        if !holders[g].contains(&best) {
            holders[g].push(best);
        }
        let units: Vec<&Unit> = match unit {
            Some(u) => vec![&groups[g].units[u]],
            None => groups[g].units.iter().collect(),
        };
        for u in units {
            for &i in &u.pairs {
                shard_of[i] = best;
            }
        }
    }
    load
}

/// Why a plan cannot be partitioned into the shards asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// The plan has fewer twin units than shards, so some shard would hold nothing.
    #[error(
        "{shards} shard(s) asked for, but the plan's {pairs} pairs form only {units} unit(s) \
         that can go to different shards (the kv_aligned twins of one prompt, span, dtype and \
         seed share a prefill): use at most {units} shards"
    )]
    TooFewUnits {
        /// N, the shards asked for.
        shards: usize,
        /// Pairs of the plan.
        pairs: usize,
        /// Twin units they form.
        units: usize,
    },
    /// No candidate partition gave every shard a pair.
    #[error("no partition into {0} non-empty shards was found")]
    NotFound(usize),
}

/// Partitions `pairs` into `n` shards (see the module documentation). `prompt_len` gives
/// each prompt's token count. Fails when the plan has fewer twin units than `n`, since some
/// shard would then hold nothing.
pub fn partition(
    pairs: &[PairSpec],
    prompt_len: &BTreeMap<String, usize>,
    mode: ContinuationMode,
    n: usize,
) -> std::result::Result<Partition, PartitionError> {
    let groups = groups(pairs, prompt_len, mode);
    let units: usize = groups.iter().map(|g| g.units.len()).sum();
    if n == 0 || units < n {
        return Err(PartitionError::TooFewUnits {
            shards: n,
            pairs: pairs.len(),
            units,
        });
    }
    let total: u64 = groups.iter().map(Group::cost).sum();
    let fair = total as f64 / n as f64;
    // Groups in the order they are split: largest first, ties by key.
    let mut order: Vec<usize> = (0..groups.len())
        .filter(|&g| groups[g].units.len() > 1)
        .collect();
    order.sort_by(|&a, &b| {
        groups[b]
            .cost()
            .cmp(&groups[a].cost())
            .then_with(|| groups[a].key.cmp(&groups[b].key))
    });
    let mut split = BTreeSet::new();
    let mut best: Option<Partition> = None;
    for step in 0..=order.len() {
        if step > 0 {
            split.insert(order[step - 1]);
        }
        let mut shard_of = vec![0; pairs.len()];
        let costs = place(&groups, &split, n, &mut shard_of);
        let mut filled = vec![false; n];
        for &s in &shard_of {
            filled[s] = true;
        }
        let nonempty = filled.iter().all(|&f| f);
        let max = costs.iter().copied().max().unwrap_or(0);
        let better = nonempty
            && best
                .as_ref()
                .is_none_or(|b| max < b.costs.iter().copied().max().unwrap_or(0));
        if better {
            best = Some(Partition {
                shard_of,
                costs,
                split_groups: split.len(),
            });
        }
        if nonempty && max as f64 <= fair * (1.0 + BALANCE_SLACK) {
            break;
        }
    }
    // Fully split, every shard gets a unit (there are at least n and each goes to the
    // cheapest shard, which an empty one is until filled).
    best.ok_or(PartitionError::NotFound(n))
}

/// A shard of a planned sweep, as `run_sweep` uses it.
#[derive(Debug, Clone)]
pub struct Selection {
    /// What the manifest records.
    pub info: ShardInfo,
}

impl Selection {
    /// Partitions `plan` and takes `shard`'s part. Errors name the sweep file and `--shard`.
    pub fn new(cfg: &LoadedConfig, plan: &Plan, shard: Shard) -> Result<Self> {
        Self::for_option(cfg, plan, shard, "--shard")
    }

    /// [`Selection::new`], its errors naming `option` (`slurm` asks for `--shards`).
    pub fn for_option(cfg: &LoadedConfig, plan: &Plan, shard: Shard, option: &str) -> Result<Self> {
        let lens = plan
            .prompts
            .iter()
            .map(|(id, p)| (id.clone(), p.len))
            .collect();
        let mode = cfg.config.continuation;
        let p = partition(&plan.pairs, &lens, mode, shard.count)
            .map_err(|e| Error::config(&cfg.path, option, e.to_string()))?;
        Ok(Selection {
            info: ShardInfo {
                index: shard.index,
                count: shard.count,
                cost_tokens: p.costs[shard.index],
                shard_costs: p.costs,
                plan: plan
                    .pairs
                    .iter()
                    .zip(&p.shard_of)
                    .map(|(spec, &s)| ShardedPair {
                        spec: spec.clone(),
                        shard: s,
                    })
                    .collect(),
                plan_load_groups: plan.load_groups(mode),
            },
        })
    }

    /// Shard `index` of the same partition, without partitioning again.
    pub fn other(&self, index: usize) -> Selection {
        let mut info = self.info.clone();
        info.index = index;
        info.cost_tokens = info.shard_costs.get(index).copied().unwrap_or(0);
        Selection { info }
    }

    /// Whether the pair at `plan_index` belongs to this shard.
    pub fn owns(&self, plan_index: usize) -> bool {
        self.info
            .plan
            .get(plan_index)
            .is_some_and(|p| p.shard == self.info.index)
    }

    /// This shard's pairs, in plan order.
    pub fn pairs(&self) -> Vec<PairSpec> {
        self.info
            .plan
            .iter()
            .filter(|p| p.shard == self.info.index)
            .map(|p| p.spec.clone())
            .collect()
    }

    /// Makes `m` the manifest of this shard: its pairs, the weight loads they need, and the
    /// shard record.
    pub fn apply(&self, m: &mut Manifest, continuation: ContinuationMode) {
        let pairs = self.pairs();
        let part = Plan {
            pairs: pairs.clone(),
            prompts: BTreeMap::new(),
            excluded: 0,
            skipped: BTreeMap::new(),
            capabilities: BTreeMap::new(),
            reference: Default::default(),
        };
        m.load_groups = part.load_groups(continuation);
        m.pairs = pairs;
        m.shard = Some(self.info.clone());
    }
}

/// The shard a `run` session works on, checked against what an earlier session left in `dir`:
/// a directory of another shard, of a whole run or of a merge is refused (exit 2), as is one
/// whose shard holds other pairs than this partition gives it (another driftsweep version).
pub fn for_sweep(
    cfg: &LoadedConfig,
    plan: &Plan,
    shard: Option<Shard>,
    dir: &Path,
    previous: Option<&Manifest>,
) -> Result<Option<Selection>> {
    let selection = shard.map(|s| Selection::new(cfg, plan, s)).transpose()?;
    let Some(prev) = previous else {
        return Ok(selection);
    };
    let refuse = |what: String| {
        Err(Error::store(
            dir,
            format!("{what}; pass --start-over to replace its results, or choose another --out"),
        ))
    };
    if prev.merged.is_some() {
        return refuse(format!(
            "holds the merge of {} shards, which `run` does not resume",
            prev.merged.as_ref().map_or(0, |m| m.count)
        ));
    }
    match (&prev.shard, &selection) {
        (None, None) => Ok(selection),
        (Some(p), None) => refuse(format!(
            "holds shard {} of this sweep; this session runs the whole sweep (add --shard {})",
            p.shard(),
            p.shard()
        )),
        (None, Some(s)) => refuse(format!(
            "holds a whole run of this sweep; this session runs shard {}",
            s.info.shard()
        )),
        (Some(p), Some(s)) if p.shard() != s.info.shard() => refuse(format!(
            "holds shard {} of this sweep; this session runs shard {}",
            p.shard(),
            s.info.shard()
        )),
        (Some(p), Some(s)) if p.plan != s.info.plan => refuse(format!(
            "holds shard {} of this sweep as another driftsweep version partitioned it",
            p.shard()
        )),
        _ => Ok(selection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::RunDtype;

    fn plan(
        prompts: &[(&str, usize)],
        spans: &[usize],
        seeds: &[u64],
    ) -> (Vec<PairSpec>, BTreeMap<String, usize>) {
        let mut pairs = Vec::new();
        for dtype in [RunDtype::Bf16, RunDtype::F16] {
            for (p, _) in prompts {
                for &span in spans {
                    for kv in [false, true] {
                        for &seed in seeds {
                            pairs.push(PairSpec::new(p, span, dtype, kv, seed));
                        }
                    }
                }
            }
        }
        let lens = prompts.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        (pairs, lens)
    }

    fn check_cover(p: &Partition, n: usize, len: usize) {
        assert_eq!(p.shard_of.len(), len, "every pair has exactly one shard");
        assert!(p.shard_of.iter().all(|&s| s < n));
        for s in 0..n {
            assert!(p.shard_of.contains(&s), "shard {s} is empty: {p:?}");
        }
    }

    #[test]
    fn parses_and_rejects_shard_specs() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in ["5/4", "4/4", "0/0", "1", "a/4", "1/b", "-1/4", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.to_string().contains("K/N"), "{bad}: {e}");
        }
        let why = |s: &str| s.parse::<Shard>().unwrap_err().to_string();
        assert!(why("5/4").contains("not below N = 4"));
        assert!(why("0/0").contains("at least 1"));
    }

    #[test]
    fn the_partition_is_deterministic_and_covers_every_pair_once() {
        let (pairs, lens) = plan(&[("a", 12), ("r8", 8)], &[16, 64, 128], &[0, 1, 2]);
        for n in 1..=8 {
            let p = partition(&pairs, &lens, ContinuationMode::Sample, n).unwrap();
            check_cover(&p, n, pairs.len());
            assert_eq!(
                p,
                partition(&pairs, &lens, ContinuationMode::Sample, n).unwrap()
            );
            // The pairs' order in the plan does not matter: the same pair gets the same shard.
            let mut rev = pairs.clone();
            rev.reverse();
            let q = partition(&rev, &lens, ContinuationMode::Sample, n).unwrap();
            for (i, s) in q.shard_of.iter().enumerate() {
                assert_eq!(*s, p.shard_of[pairs.len() - 1 - i]);
            }
            assert_eq!(p.costs.len(), n);
        }
    }

    #[test]
    fn twins_share_a_shard_and_groups_stay_whole_when_balance_allows() {
        // 12 (prompt, seed) groups of equal cost over 4 shards: no group needs splitting.
        let (pairs, lens) = plan(
            &[("a", 10), ("b", 10), ("c", 10)],
            &[32, 128],
            &[0, 1, 2, 3],
        );
        let p = partition(&pairs, &lens, ContinuationMode::Sample, 4).unwrap();
        check_cover(&p, 4, pairs.len());
        assert_eq!(p.split_groups, 0);
        let mut group_shard: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for (q, &s) in pairs.iter().zip(&p.shard_of) {
            let g = *group_shard.entry((q.prompt.clone(), q.seed)).or_insert(s);
            assert_eq!(g, s, "group {}/{} split", q.prompt, q.seed);
        }
        assert_eq!(p.costs.iter().min(), p.costs.iter().max(), "{:?}", p.costs);
    }

    #[test]
    fn large_groups_are_split_into_twin_units_to_balance() {
        // The B3.70 shape: one prompt, three seeds (three groups) over four shards.
        let (pairs, lens) = plan(&[("p0", 14)], &[32, 128, 512], &[0, 1, 2]);
        let p = partition(&pairs, &lens, ContinuationMode::Sample, 4).unwrap();
        check_cover(&p, 4, pairs.len());
        assert!(p.split_groups > 0);
        for (i, q) in pairs.iter().enumerate() {
            for (j, r) in pairs.iter().enumerate() {
                if (&q.prompt, q.span, q.dtype, q.seed) == (&r.prompt, r.span, r.dtype, r.seed) {
                    assert_eq!(
                        p.shard_of[i], p.shard_of[j],
                        "twins {} and {} split",
                        q.id, r.id
                    );
                }
            }
        }
        let total: u64 = p.costs.iter().sum();
        let max = *p.costs.iter().max().unwrap();
        // The largest unit (span 512) bounds the balance: within 20 % of the fair share here.
        assert!((max as f64) <= 1.2 * total as f64 / 4.0, "{:?}", p.costs);
    }

    #[test]
    fn random_continuations_cost_nothing_to_split() {
        let (pairs, lens) = plan(&[("r", 8)], &[32, 128, 512], &[0]);
        let p = partition(&pairs, &lens, ContinuationMode::Random, 3).unwrap();
        let s = partition(&pairs, &lens, ContinuationMode::Sample, 3).unwrap();
        assert!(p.costs.iter().sum::<u64>() < s.costs.iter().sum::<u64>());
    }

    #[test]
    fn more_shards_than_units_is_refused() {
        let (pairs, lens) = plan(&[("a", 4)], &[16], &[0]);
        // Two dtypes × one span × one seed: 2 units.
        assert!(partition(&pairs, &lens, ContinuationMode::Sample, 2).is_ok());
        let e = partition(&pairs, &lens, ContinuationMode::Sample, 3).unwrap_err();
        assert!(e.to_string().contains("at most 2 shards"), "{e}");
    }

    #[test]
    fn shard_dirs_sit_next_to_the_merged_directory() {
        let s = Shard { index: 2, count: 4 };
        assert_eq!(
            shard_dir(Path::new("results/x"), s),
            PathBuf::from("results/x.shards/2-of-4")
        );
    }
}
