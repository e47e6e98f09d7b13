//! What a plan will cost: forward tokens and an estimated wall time, from per-token costs of
//! each (engine, weights, dtype) load on the device.
//!
//! The costs come from one of two places. Earlier runs' records of the same sweep (the
//! results directory `plan` is pointed at) give seconds per fed token per (load, mode,
//! kv_aligned): the best evidence, since they are this sweep's own runs. Otherwise a small
//! calibration (a load, two prefill forwards, decode steps at two cache lengths) is timed
//! once per (model sha256, engine, weights, dtype, device, threads) and cached in the cache
//! directory beside the weight hashes, so a second `plan` costs nothing.
//!
//! The run model follows what the worker does (src/sweep/worker.rs): one load per group;
//! continuations generated once per (prompt, seed) at the longest span on the reference;
//! one prefill per (prompt, span, seed) of a group (kv_aligned twins reuse it); a
//! yardstick prefill on the reference for other settings; decode steps whose cost grows
//! with the cache length. A group on several lanes (pairs side by side, each lane on its
//! share of the threads) is calibrated on all its lanes at once and its pairs' time
//! divided among the lanes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::spec::{LoadKey, Mode, PairSpec, Plan};
use crate::config::ContinuationMode;
use crate::error::{Error, Result};
use crate::model::{ModelInfo, Rows};

/// Measured costs of one load on one device, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    /// Loading the weights.
    pub load_s: f64,
    /// Fixed cost of one multi-token forward.
    pub forward_s: f64,
    /// Each token of a multi-token forward.
    pub token_s: f64,
    /// One decode step (a one-token forward) at an empty cache.
    pub step_s: f64,
    /// What each cached position adds to a decode step.
    pub step_per_position_s: f64,
}

impl Costs {
    /// One forward of `tokens` tokens (a one-token forward is a decode step at `start`).
    fn forward(&self, tokens: usize, start: usize) -> f64 {
        if tokens == 1 {
            self.step(start)
        } else {
            self.forward_s + self.token_s * tokens as f64
        }
    }

    /// One decode step with `cached` positions in the cache.
    fn step(&self, cached: usize) -> f64 {
        self.step_s + self.step_per_position_s * cached as f64
    }

    /// `n` decode steps from `start` cached positions.
    fn steps(&self, start: usize, n: usize) -> f64 {
        let mean_cache = start as f64 + n.saturating_sub(1) as f64 / 2.0;
        n as f64 * (self.step_s + self.step_per_position_s * mean_cache)
    }
}

/// Seconds per fed token of earlier runs, by (load, mode, kv_aligned): from run records.
pub type Observed = BTreeMap<(LoadKey, Mode, bool), f64>;

/// One earlier run, as its record gives it.
#[derive(Debug, Clone, Copy)]
pub struct ObservedRun {
    /// The load it ran on.
    pub key: LoadKey,
    /// Prefill or decode.
    pub mode: Mode,
    /// Its pair's kv_aligned.
    pub kv_aligned: bool,
    /// Tokens it fed.
    pub tokens_fed: usize,
    /// Its wall time, seconds.
    pub wall_s: f64,
}

/// Seconds per fed token by (load, mode, kv_aligned), pooled over `runs` (total time over
/// total tokens, so long runs weigh more, as they do in a sweep's wall time).
pub fn observed_rates(runs: &[ObservedRun]) -> Observed {
    let mut sums: BTreeMap<(LoadKey, Mode, bool), (f64, usize)> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.tokens_fed > 0 && r.wall_s > 0.0) {
        let e = sums.entry((r.key, r.mode, r.kv_aligned)).or_default();
        e.0 += r.wall_s;
        e.1 += r.tokens_fed;
    }
    sums.into_iter()
        .map(|(k, (s, t))| (k, s / t as f64))
        .collect()
}

/// Where the costs of an estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// This sweep's earlier run records.
    Records,
    /// A calibration measured now.
    Measured,
    /// A calibration cached earlier.
    Cached,
}

/// The estimate of one load group (or of the whole plan).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupEstimate {
    /// Pairs that will run (not SKIPPED).
    pub pairs: usize,
    /// Runs of those pairs.
    pub runs: usize,
    /// Tokens fed by prefill runs.
    pub prefill_tokens: usize,
    /// Tokens fed by decode (or serving path) runs.
    pub decode_tokens: usize,
    /// Estimated seconds.
    pub seconds: f64,
}

impl GroupEstimate {
    fn add(&mut self, o: &GroupEstimate) {
        self.pairs += o.pairs;
        self.runs += o.runs;
        self.prefill_tokens += o.prefill_tokens;
        self.decode_tokens += o.decode_tokens;
        self.seconds += o.seconds;
    }
}

/// A plan's estimate: per load group, the reference's own work, and the total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Estimate {
    /// Per (engine, weights, dtype) in plan order, with where its costs came from.
    pub groups: Vec<(LoadKey, GroupEstimate, Option<CostSource>)>,
    /// Continuations and yardsticks on the reference, seconds.
    pub reference_s: f64,
    /// The whole plan.
    pub total: GroupEstimate,
}

/// The cost of a pair's (prefill, decode) runs with `c`, following the paths' forwards.
/// `prefill_paid`: the prefill of its (prompt, span, seed) was already counted.
fn pair_seconds(plan: &Plan, p: &PairSpec, c: &Costs, prefill_paid: bool) -> (f64, f64) {
    let len = plan.prompts.get(&p.prompt).map_or(0, |x| x.len);
    let s = p.span;
    let (pre_tokens, dec_tokens) = plan.forward_tokens(p);
    let prefill = if prefill_paid {
        0.0
    } else if pre_tokens == len + s {
        c.forward(len + s, 0)
    } else {
        // One forward per prefix: their mean length, S of them.
        let n = match &p.positions {
            Some(at) => at.len(),
            None => s,
        }
        .max(1);
        n as f64 * c.forward(pre_tokens / n, 0)
    };
    let decode = if !p.path.is_default() {
        // Chunked and batched paths: multi-token forwards, priced per token.
        c.forward_s + c.token_s * dec_tokens as f64
    } else if p.kv_aligned {
        // The cache forward (cut back or prompt alone), then S steps after the prompt.
        let cache = dec_tokens.saturating_sub(s);
        c.forward(cache, 0) + c.steps(len, s)
    } else {
        c.steps(0, len + s)
    };
    (prefill, decode)
}

/// Estimates `plan`'s cost. `costs` gives each load's calibration (with its source),
/// `observed` the earlier runs' rates (preferred where present), `skipped` the pairs that
/// will not run (the plan's and the device's reasons alike).
pub fn estimate(
    plan: &Plan,
    continuation: ContinuationMode,
    costs: &BTreeMap<LoadKey, (Costs, CostSource)>,
    observed: &Observed,
    skipped: &BTreeSet<String>,
    lanes: &BTreeMap<LoadKey, usize>,
) -> Estimate {
    let mut out = Estimate::default();
    let runnable: Vec<&PairSpec> = plan
        .pairs
        .iter()
        .filter(|p| !skipped.contains(&p.id))
        .collect();
    for key in plan.load_keys() {
        let mut g = GroupEstimate::default();
        let mut source = costs.get(&key).map(|(_, s)| *s);
        let mut paid: BTreeSet<(String, usize, u64)> = BTreeSet::new();
        let mut any = false;
        for p in runnable.iter().filter(|p| p.load_key() == key) {
            any = true;
            let (pt, dt) = plan.forward_tokens(p);
            g.pairs += 1;
            g.runs += 2;
            g.prefill_tokens += pt;
            g.decode_tokens += dt;
            let first = paid.insert((p.prompt.clone(), p.span, p.seed));
            let rate = |m: Mode| observed.get(&(key, m, p.kv_aligned)).copied();
            let from_costs = costs
                .get(&key)
                .map(|(c, _)| pair_seconds(plan, p, c, !first));
            let pre = match (rate(Mode::Prefill), from_costs) {
                (_, _) if !first => 0.0,
                (Some(r), _) => r * pt as f64,
                (None, Some((a, _))) => a,
                (None, None) => 0.0,
            };
            let dec = match (rate(Mode::Decode), from_costs) {
                (Some(r), _) => r * dt as f64,
                (None, Some((_, b))) => b,
                (None, None) => 0.0,
            };
            if rate(Mode::Decode).is_some() {
                source = Some(CostSource::Records);
            }
            g.seconds += pre + dec;
        }
        // Lanes run the group's pairs side by side.
        g.seconds /= lanes.get(&key).copied().unwrap_or(1).max(1) as f64;
        if any && let Some((c, _)) = costs.get(&key) {
            g.seconds += c.load_s;
        }
        out.groups.push((key, g, source));
    }
    let reference_lanes = lanes.get(&plan.reference).copied().unwrap_or(1).max(1);
    out.reference_s =
        reference_seconds(plan, continuation, costs, &runnable) / reference_lanes as f64;
    for (_, g, _) in &out.groups {
        out.total.add(g);
    }
    out.total.seconds += out.reference_s;
    out
}

/// The reference's own work: continuations (a prompt forward and S sampled steps per
/// (prompt, seed) at its longest span), yardstick prefills for other settings' pairs, and
/// its load when no pair of its own runs.
fn reference_seconds(
    plan: &Plan,
    continuation: ContinuationMode,
    costs: &BTreeMap<LoadKey, (Costs, CostSource)>,
    runnable: &[&PairSpec],
) -> f64 {
    let Some((c, _)) = costs.get(&plan.reference) else {
        return 0.0;
    };
    let mut s = 0.0;
    if continuation != ContinuationMode::Random {
        for ((prompt, _), span) in plan.continuation_lengths() {
            let len = plan.prompts.get(&prompt).map_or(0, |p| p.len);
            s += c.forward(len, 0) + c.steps(len, span);
        }
    }
    let own: BTreeSet<(String, usize, u64)> = runnable
        .iter()
        .filter(|p| p.load_key() == plan.reference)
        .map(|p| (p.prompt.clone(), p.span, p.seed))
        .collect();
    let yard: BTreeSet<(String, usize, u64)> = runnable
        .iter()
        .filter(|p| p.load_key() != plan.reference)
        .map(|p| (p.prompt.clone(), p.span, p.seed))
        .filter(|k| !own.contains(k))
        .collect();
    for (prompt, span, _) in &yard {
        let len = plan.prompts.get(prompt).map_or(0, |p| p.len);
        s += c.forward(len + span, 0);
    }
    let reference_runs = runnable.iter().any(|p| p.load_key() == plan.reference);
    if !reference_runs && (!yard.is_empty() || continuation != ContinuationMode::Random) {
        s += c.load_s;
    }
    s
}

/// The cache file of calibrations, in the cache directory.
const CACHE_FILE: &str = "costs.json";

fn cache_path() -> Option<PathBuf> {
    crate::model::hash_cache::cache_dir().map(|d| d.join(CACHE_FILE))
}

/// The cache key of one load's calibration: the weights' sha256, the load, the device and
/// the lanes with their threads (costs on 2 threads say little about 16).
pub fn cache_key(
    info: &ModelInfo,
    key: LoadKey,
    device: &str,
    (lanes, threads): (usize, usize),
) -> String {
    format!(
        "{}|{}|{}|{}|{device}|{lanes}x{threads}",
        info.sha256,
        key.engine.as_str(),
        key.weights.as_str(),
        key.dtype.as_str()
    )
}

/// The cached calibration of `key`, or (when `measure`) a fresh one, then cached; `None`
/// when neither. A cache that cannot be read or written only costs a calibration.
pub fn costs_for(
    info: &ModelInfo,
    key: LoadKey,
    (device, lanes): (&Device, (usize, usize)),
    cache_key: &str,
    measure: bool,
) -> Result<Option<(Costs, CostSource)>> {
    let file = cache_path();
    let mut all: BTreeMap<String, Costs> = file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(c) = all.get(cache_key) {
        return Ok(Some((*c, CostSource::Cached)));
    }
    if !measure {
        return Ok(None);
    }
    let c = calibrate(info, key, device, lanes)?;
    if let Some(f) = file {
        all.insert(cache_key.to_string(), c);
        if let (Some(dir), Ok(bytes)) = (f.parent(), serde_json::to_vec_pretty(&all))
            && std::fs::create_dir_all(dir).is_ok()
        {
            // Two processes racing here each write a whole file; either result is valid.
            let _ = crate::fsutil::write_atomic(&f, &bytes);
        }
    }
    Ok(Some((c, CostSource::Measured)))
}

/// Prefill sizes and decode cache lengths of the calibration: small enough for a second on
/// a 135M model, far enough apart to separate fixed and per-token costs.
const SHORT: usize = 16;
const LONG: usize = 96;
const FAR: usize = 224;
const STEPS: usize = 16;
const REPEAT: usize = 3;

/// Times a load, then on every lane at once (`lanes` of `threads` CPU threads each)
/// prefill forwards of [`SHORT`] and [`LONG`] tokens (every row's logits, as a prefill keeps
/// the span's) and [`STEPS`] decode steps at two cache lengths, and fits the linear
/// [`Costs`] model to the mean times.
pub fn calibrate(
    info: &ModelInfo,
    key: LoadKey,
    device: &Device,
    (lanes, threads): (usize, usize),
) -> Result<Costs> {
    let t = Instant::now();
    let model = info.load_under_test(key.engine, key.weights, key.dtype, device)?;
    let load_s = t.elapsed().as_secs_f64();
    let model: &dyn crate::model::ModelUnderTest = model.as_ref();
    // Every lane times the same forwards at once, each on its own pool of one lane's threads
    // (candle's CPU kernels split over the current rayon pool), so the costs are what a lane
    // pays beside the others: a loaded machine or a shared memory bus gives lanes less than
    // their count.
    let timed: Vec<Result<Costs>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes.max(1))
            .map(|_| {
                scope.spawn(|| {
                    match rayon::ThreadPoolBuilder::new()
                        .num_threads(threads.max(1))
                        .build()
                    {
                        Ok(pool) => pool.install(|| time_forwards(info, model)),
                        Err(_) => time_forwards(info, model),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let timed = timed.into_iter().collect::<Result<Vec<Costs>>>()?;
    let n = timed.len().max(1) as f64;
    let mean = |f: fn(&Costs) -> f64| timed.iter().map(f).sum::<f64>() / n;
    Ok(Costs {
        load_s,
        forward_s: mean(|c| c.forward_s),
        token_s: mean(|c| c.token_s),
        step_s: mean(|c| c.step_s),
        step_per_position_s: mean(|c| c.step_per_position_s),
    })
}

/// One lane's timings on `model` (its load time left 0).
fn time_forwards(info: &ModelInfo, model: &dyn crate::model::ModelUnderTest) -> Result<Costs> {
    let fail = |e: candle_core::Error| Error::model(&info.source, format!("calibration: {e}"));
    let vocab = model.vocab_size().max(4) as u32;
    let ids: Vec<u32> = (0..(FAR + STEPS) as u32)
        .map(|i| 3 + (i * 37) % (vocab - 3))
        .collect();
    let every = model.capabilities().every_row;
    let rows = |n: usize| if every { Rows::From(0) } else { Rows::last(n) };
    // Means, not medians: a sweep pays every stall of a loaded machine, and so must the
    // calibration that prices it.
    let time_prefill = |n: usize| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..REPEAT {
            let mut seq = model.sequence(n).map_err(fail)?;
            seq.forward(&ids[..n], rows(n)).map_err(fail)?;
        }
        Ok(t.elapsed().as_secs_f64() / REPEAT as f64)
    };
    time_prefill(SHORT)?; // warm-up: allocator, kernels
    let (short, long) = (time_prefill(SHORT)?, time_prefill(LONG)?);
    let token_s = ((long - short) / (LONG - SHORT) as f64).max(0.0);
    let forward_s = (short - token_s * SHORT as f64).max(0.0);
    let time_steps = |start: usize| -> Result<f64> {
        let mut seq = model.sequence(start + STEPS).map_err(fail)?;
        seq.forward(&ids[..start], Rows::None).map_err(fail)?;
        let t = Instant::now();
        for i in 0..STEPS {
            seq.forward(&ids[start + i..start + i + 1], Rows::From(0))
                .map_err(fail)?;
        }
        Ok(t.elapsed().as_secs_f64() / STEPS as f64)
    };
    let (near, far) = (time_steps(SHORT)?, time_steps(FAR)?);
    let step_per_position_s = ((far - near) / (FAR - SHORT) as f64).max(0.0);
    Ok(Costs {
        load_s: 0.0,
        forward_s,
        token_s,
        step_s: (near - step_per_position_s * SHORT as f64).max(0.0),
        step_per_position_s,
    })
}

/// Seconds as a person reads them: "42 s", "3 min 20 s", "1 h 05 min".
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_price_the_growing_cache() {
        let c = Costs {
            load_s: 0.0,
            forward_s: 0.0,
            token_s: 0.0,
            step_s: 1.0,
            step_per_position_s: 0.5,
        };
        // Steps at caches 10, 11, 12: 3 + 0.5·33.
        assert!((c.steps(10, 3) - (3.0 + 0.5 * 33.0)).abs() < 1e-9);
        assert_eq!(c.forward(1, 4), 3.0, "a one-token forward is a step");
    }

    #[test]
    fn human_seconds_reads_well() {
        assert_eq!(human_seconds(42.4), "42 s");
        assert_eq!(human_seconds(200.0), "3 min 20 s");
        assert_eq!(human_seconds(3900.0), "1 h 05 min");
    }
}
