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
    /// Each row of logits a forward returns (the output head, a large share of a step for a
    /// large vocabulary: Gemma 3's 262,144 rows). 0 for engines that return the last row
    /// only: their forward and step costs include their one row.
    #[serde(default)]
    pub row_s: f64,
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
    /// Writing the run, pair and report records (each one fsynced), seconds.
    pub records_s: f64,
    /// The whole plan.
    pub total: GroupEstimate,
}

/// The cost of a pair's (prefill, decode) runs with `c`, following the paths' forwards.
/// `prefill_paid`: the prefill of its (prompt, span, seed) was already counted.
fn pair_seconds(plan: &Plan, p: &PairSpec, c: &Costs, prefill_paid: bool) -> (f64, f64) {
    let len = plan.prompts.get(&p.prompt).map_or(0, |x| x.len);
    let s = p.span;
    let (pre_tokens, dec_tokens) = plan.forward_tokens(p);
    // Logits rows: the compared positions, in either run (decode's other steps and cache
    // forwards return none).
    let rows = match &p.positions {
        Some(at) => at.len(),
        None => s,
    };
    let prefill = if prefill_paid {
        0.0
    } else if pre_tokens == len + s {
        c.forward(len + s, 0) + c.row_s * rows as f64
    } else {
        // One forward per prefix: their mean length, S of them.
        let n = match &p.positions {
            Some(at) => at.len(),
            None => s,
        }
        .max(1);
        n as f64 * (c.forward(pre_tokens / n, 0) + c.row_s)
    };
    let decode = c.row_s * rows as f64
        + if !p.path.is_default() {
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

/// What an estimate is priced from.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// Each load's calibration, with its source, on the lanes its group runs.
    pub costs: BTreeMap<LoadKey, (Costs, CostSource)>,
    /// Earlier runs' rates (preferred where present).
    pub observed: Observed,
    /// Pairs that will not run (the plan's and the device's reasons alike).
    pub skipped: BTreeSet<String>,
    /// Each group's lanes.
    pub lanes: BTreeMap<LoadKey, usize>,
    /// The reference's calibration on the lanes the continuations run (one per (prompt,
    /// seed), so often fewer lanes with more threads each than the reference's pairs),
    /// and that lane count; `None`: no continuation is generated.
    pub continuations: Option<(Costs, usize)>,
    /// One record's write ([`record_cost`]), seconds.
    pub record_s: f64,
}

/// Estimates `plan`'s cost from `prices`.
pub fn estimate(plan: &Plan, continuation: ContinuationMode, prices: &Prices) -> Estimate {
    let Prices {
        costs,
        observed,
        skipped,
        lanes,
        record_s,
        ..
    } = prices;
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
        // The group's units of work (pairs sharing a prefill), in plan order: per pair its
        // prefill and decode seconds.
        let mut units: Vec<Unit> = Vec::new();
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
            let unit = (p.prompt.clone(), p.span, p.seed);
            match units.iter_mut().find(|(k, _)| *k == unit) {
                Some((_, pairs)) => pairs.push((pre, dec)),
                None => units.push((unit, vec![(pre, dec)])),
            }
        }
        let lanes = lanes.get(&key).copied().unwrap_or(1).max(1);
        g.seconds = makespan(units, lanes);
        if any && let Some((c, _)) = costs.get(&key) {
            g.seconds += c.load_s;
        }
        out.groups.push((key, g, source));
    }
    out.reference_s = reference_seconds(plan, continuation, prices, &runnable);
    for (_, g, _) in &out.groups {
        out.total.add(g);
    }
    // Records are written by every lane but wait on one disk: not divided among lanes.
    out.records_s = record_s * (RECORDS_PER_PAIR * out.total.pairs + RECORDS_PER_SWEEP) as f64;
    out.total.seconds += out.reference_s + out.records_s;
    out
}

/// A unit of work: (prompt, span, seed) and its pairs' (prefill, decode) seconds.
type Unit = ((String, usize, u64), Vec<(f64, f64)>);

/// The wall time of a group's units on `lanes`, as the worker runs them
/// (src/sweep/worker.rs): one lane runs everything in order; several take the units
/// longest span first, then their pairs one by one from one queue, each pair to the lane
/// that frees first, and a pair that shares its unit's prefill waits until the unit's
/// first pair has computed it. Dividing the sum by the lanes instead priced the SmolLM2
/// race (two units a group, spans 32 and 128) at two thirds of its time.
fn makespan(mut units: Vec<Unit>, lanes: usize) -> f64 {
    if lanes <= 1 {
        return units
            .iter()
            .flat_map(|(_, pairs)| pairs.iter().map(|(a, b)| a + b))
            .sum();
    }
    let span_sum = |u: &Unit| u.0.1 * u.1.len();
    units.sort_by_key(|u| std::cmp::Reverse(span_sum(u)));
    let mut free = vec![0.0f64; lanes];
    let next_lane = |free: &[f64]| {
        let (i, _) =
            free.iter().enumerate().fold(
                (0, f64::INFINITY),
                |b, (i, &t)| if t < b.1 { (i, t) } else { b },
            );
        i
    };
    for (_, pairs) in &units {
        let mut posted = 0.0;
        for (n, (pre, dec)) in pairs.iter().enumerate() {
            let lane = next_lane(&free);
            let start = if n == 0 {
                free[lane]
            } else {
                free[lane].max(posted)
            };
            if n == 0 {
                posted = start + pre;
            }
            free[lane] = start + pre + dec;
        }
    }
    free.into_iter().fold(0.0, f64::max)
}

/// Records a pair writes: its two run records and its pair record.
pub const RECORDS_PER_PAIR: usize = 3;
/// Records a sweep writes once: manifest, owner marker, the reports and their templates.
pub const RECORDS_PER_SWEEP: usize = 8;

/// What one record costs to write as the store writes it ([`crate::fsutil::write_atomic`]:
/// a temporary file, its fsync, the rename, the directory's fsync), seconds: the median of a
/// few writes in the cache directory. Measured, not cached: it is a few milliseconds, and
/// what a disk pays for an fsync changes with its load. On a disk where an fsync costs
/// milliseconds this is most of a small model's sweep (the quickstart: 131 records, 0.75 s
/// of fsync against 1.05 s of model work on 2 cores). 0 when there is no cache directory.
pub fn record_cost() -> f64 {
    const WRITES: usize = 8;
    let Some(dir) = crate::model::hash_cache::cache_dir().map(|d| d.join("calibration")) else {
        return 0.0;
    };
    if std::fs::create_dir_all(&dir).is_err() {
        return 0.0;
    }
    let file = dir.join(format!("record-{}.json", std::process::id()));
    let bytes = vec![b' '; 2048];
    // The median write: one slow fsync behind another process's flush says little about the
    // sweep's hundreds.
    let mut times: Vec<f64> = (0..WRITES)
        .filter_map(|_| {
            let t = Instant::now();
            crate::fsutil::write_atomic(&file, &bytes).ok()?;
            Some(t.elapsed().as_secs_f64())
        })
        .collect();
    let _ = std::fs::remove_file(&file);
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(0.0)
}

/// The reference's own work: continuations (a prompt forward and S sampled steps per
/// (prompt, seed) at its longest span, on their own lanes), yardstick prefills for other
/// settings' pairs (on the reference group's lanes), and its load when no pair of its own
/// runs.
fn reference_seconds(
    plan: &Plan,
    continuation: ContinuationMode,
    prices: &Prices,
    runnable: &[&PairSpec],
) -> f64 {
    let Some((c, _)) = prices.costs.get(&plan.reference) else {
        return 0.0;
    };
    let mut s = 0.0;
    if continuation != ContinuationMode::Random {
        let (cc, lanes) = prices.continuations.unwrap_or((*c, 1));
        let jobs: Vec<_> = plan
            .continuation_lengths()
            .into_iter()
            .map(|((prompt, seed), span)| {
                let len = plan.prompts.get(&prompt).map_or(0, |p| p.len);
                let t = cc.forward(len, 0) + cc.steps(len, span) + cc.row_s * (span + 1) as f64;
                ((prompt, span, seed), vec![(t, 0.0)])
            })
            .collect();
        s += makespan(jobs, lanes);
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
    let yard_s: f64 = yard
        .iter()
        .map(|(prompt, span, _)| {
            let len = plan.prompts.get(prompt).map_or(0, |p| p.len);
            c.forward(len + span, 0) + c.row_s * *span as f64
        })
        .sum();
    let reference_lanes = prices
        .lanes
        .get(&plan.reference)
        .copied()
        .unwrap_or(1)
        .max(1);
    s += yard_s / reference_lanes as f64;
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
    // v2: steps and prefill tokens without their logits rows (`row_s` apart).
    format!(
        "v2|{}|{}|{}|{}|{device}|{lanes}x{threads}",
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
    // their count. A barrier starts each phase on every lane together: unsynchronised, one
    // lane's decode steps were timed beside another's long prefill (quantized Gemma 3 on 2
    // cores: steps 135–345 ms in calibration against 25–38 ms in the sweep they priced).
    let lanes = lanes.max(1);
    let barrier = std::sync::Barrier::new(lanes);
    let timed: Vec<Result<Phases>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|_| {
                scope.spawn(|| {
                    let together = || {
                        barrier.wait();
                    };
                    match rayon::ThreadPoolBuilder::new()
                        .num_threads(threads.max(1))
                        .build()
                    {
                        Ok(pool) => pool.install(|| time_forwards(info, model, &together)),
                        Err(_) => time_forwards(info, model, &together),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let timed = timed.into_iter().collect::<Result<Vec<Phases>>>()?;
    let mut c = Phases::harmonic(&timed).fit();
    c.load_s = load_s;
    Ok(c)
}

/// One lane's mean seconds per forward in each timed phase of the calibration.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    /// A [`SHORT`]-token prefill returning its last row.
    short: f64,
    /// A [`LONG`]-token prefill returning its last row.
    long: f64,
    /// A [`LONG`]-token prefill returning every row (the last row only where the engine
    /// cannot do more).
    every_row: f64,
    /// A decode step at [`SHORT`] cached positions.
    near: f64,
    /// A decode step at [`FAR`] cached positions.
    far: f64,
}

impl Phases {
    /// What one lane pays per forward when all of them run: the harmonic mean of the
    /// lanes' times, since the group's throughput is the sum of the lanes' rates. Lanes are
    /// not always fair: quantized Gemma 3 on two one-thread lanes ran one lane's steps at 42
    /// ms and the other's at 254 ms, for about the throughput of one lane alone; the plain
    /// mean priced that group at 1.75 times its measured time.
    fn harmonic(lanes: &[Phases]) -> Phases {
        let h = |f: fn(&Phases) -> f64| {
            let mut sum = 0.0;
            for l in lanes {
                let t = f(l);
                if t <= 0.0 {
                    return 0.0;
                }
                sum += 1.0 / t;
            }
            if sum > 0.0 {
                lanes.len() as f64 / sum
            } else {
                0.0
            }
        };
        Phases {
            short: h(|p| p.short),
            long: h(|p| p.long),
            every_row: h(|p| p.every_row),
            near: h(|p| p.near),
            far: h(|p| p.far),
        }
    }

    /// The linear [`Costs`] model through the phases' times (load time left 0).
    fn fit(&self) -> Costs {
        let token_s = ((self.long - self.short) / (LONG - SHORT) as f64).max(0.0);
        let step_per_position_s = ((self.far - self.near) / (FAR - SHORT) as f64).max(0.0);
        Costs {
            load_s: 0.0,
            forward_s: (self.short - token_s * SHORT as f64).max(0.0),
            token_s,
            step_s: (self.near - step_per_position_s * SHORT as f64).max(0.0),
            step_per_position_s,
            row_s: ((self.every_row - self.long) / (LONG - 1) as f64).max(0.0),
        }
    }
}

/// One lane's timings on `model`. `together` is called before each
/// timed phase, by every lane the same number of times, errors or not (a lane that stopped
/// early would leave the others waiting at the barrier).
fn time_forwards(
    info: &ModelInfo,
    model: &dyn crate::model::ModelUnderTest,
    together: &dyn Fn(),
) -> Result<Phases> {
    let fail = |e: candle_core::Error| Error::model(&info.source, format!("calibration: {e}"));
    let vocab = model.vocab_size().max(4) as u32;
    let ids: Vec<u32> = (0..(FAR + STEPS) as u32)
        .map(|i| 3 + (i * 37) % (vocab - 3))
        .collect();
    // Forwards return one row (the last) and steps none, where the engine allows it; a
    // phase of every row prices the rows apart, as a run asks only for compared positions.
    let every = model.capabilities().every_row;
    let step_rows = if every { Rows::None } else { Rows::From(0) };
    // Means, not medians: a sweep pays every stall of a loaded machine, and so must the
    // calibration that prices it.
    let time_prefill = |n: usize, rows: Rows| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..REPEAT {
            let mut seq = model.sequence(n).map_err(fail)?;
            seq.forward(&ids[..n], rows).map_err(fail)?;
        }
        Ok(t.elapsed().as_secs_f64() / REPEAT as f64)
    };
    // Six phases, each begun together; the first error is kept and its later phases
    // only wait.
    let mut failed: Option<Error> = None;
    let mut phase = |f: &dyn Fn() -> Result<f64>| -> f64 {
        together();
        if failed.is_some() {
            return 0.0;
        }
        // A panic inside a model must not leave the other lanes at the next barrier.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
            Err(Error::model(
                &info.source,
                "calibration: the model panicked",
            ))
        });
        done.unwrap_or_else(|e| {
            failed = Some(e);
            0.0
        })
    };
    phase(&|| time_prefill(SHORT, Rows::last(SHORT))); // warm-up: allocator, kernels
    let short = phase(&|| time_prefill(SHORT, Rows::last(SHORT)));
    let long = phase(&|| time_prefill(LONG, Rows::last(LONG)));
    let every_row = if every {
        phase(&|| time_prefill(LONG, Rows::From(0)))
    } else {
        phase(&|| Ok(long))
    };
    let time_steps = |start: usize| -> Result<f64> {
        let mut seq = model.sequence(start + STEPS).map_err(fail)?;
        seq.forward(&ids[..start], Rows::None).map_err(fail)?;
        let t = Instant::now();
        for i in 0..STEPS {
            seq.forward(&ids[start + i..start + i + 1], step_rows)
                .map_err(fail)?;
        }
        Ok(t.elapsed().as_secs_f64() / STEPS as f64)
    };
    let near = phase(&|| time_steps(SHORT));
    let far = phase(&|| time_steps(FAR));
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Phases {
        short,
        long,
        every_row,
        near,
        far,
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
            row_s: 0.0,
        };
        // Steps at caches 10, 11, 12: 3 + 0.5·33.
        assert!((c.steps(10, 3) - (3.0 + 0.5 * 33.0)).abs() < 1e-9);
        assert_eq!(c.forward(1, 4), 3.0, "a one-token forward is a step");
    }

    #[test]
    fn lanes_wait_for_the_longest_unit() {
        let unit = |span: usize, pairs: &[(f64, f64)]| (("p".to_string(), span, 0), pairs.to_vec());
        // Two units of two pairs sharing a prefill; the long one goes first.
        let units = vec![
            unit(32, &[(1.0, 1.0), (0.0, 1.0)]),
            unit(128, &[(4.0, 4.0), (0.0, 4.0)]),
        ];
        assert_eq!(makespan(units.clone(), 1), 15.0, "one lane: the sum");
        // Lane 0: long producer 0..8; lane 1 waits for its prefill (4), decodes 4..8;
        // then the short unit's producer 8..10 and consumer from its prefill at 9..10.
        assert_eq!(makespan(units, 2), 10.0);
    }

    #[test]
    fn human_seconds_reads_well() {
        assert_eq!(human_seconds(42.4), "42 s");
        assert_eq!(human_seconds(200.0), "3 min 20 s");
        assert_eq!(human_seconds(3900.0), "1 h 05 min");
    }
}
