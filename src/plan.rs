//! Expansion of a sweep file into pairs and runs: the cartesian product of the `sweep` lists
//! minus `exclude`, with stable readable ids, checked against the model's context length.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{
    AllOr, ContinuationMode, ExcludeRule, LoadedConfig, PromptSource, TraceConfig, TracePositions,
};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
use crate::model::{Capabilities, ModelInfo};
use crate::path::RunPath;
use crate::trace::{TensorName, TraceSelection};

/// Which path a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One forward over prompt + span.
    Prefill,
    /// Token by token with a KV cache (the prompt as kv_aligned says).
    Decode,
}

impl Mode {
    /// Lowercase name, as in run ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Decode => "decode",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One (prefill, decode) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSpec {
    /// `prompt.sSPAN.DTYPE.kvK.seedN`, then `.ENGINE` unless the engine is the own decoder
    /// and `.WEIGHTS` unless the weights are dequantized (so the ids of sweeps without those
    /// axes are what they always were).
    pub id: String,
    /// Prompt id.
    pub prompt: String,
    /// Span length S.
    pub span: usize,
    /// Run dtype.
    pub dtype: RunDtype,
    /// How decode builds the prompt's cache.
    pub kv_aligned: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Implementation under test (records written before engines existed have none: the own
    /// decoder).
    #[serde(default)]
    pub engine: Engine,
    /// Weight format (absent in older records: dequantized).
    #[serde(default)]
    pub weights: WeightFormat,
    /// Path of the run under test (absent in older records: decode).
    #[serde(default, skip_serializing_if = "RunPath::is_default")]
    pub path: RunPath,
}

impl PairSpec {
    /// The pair of these settings on the own decoder with dequantized weights, with its id.
    pub fn new(prompt: &str, span: usize, dtype: RunDtype, kv_aligned: bool, seed: u64) -> Self {
        PairSpec {
            id: String::new(),
            prompt: prompt.to_string(),
            span,
            dtype,
            kv_aligned,
            seed,
            engine: Engine::default(),
            weights: WeightFormat::default(),
            path: RunPath::default(),
        }
        .with_id()
    }

    /// The same pair with its run under test on `path`, with its id.
    pub fn via(mut self, path: RunPath) -> Self {
        self.path = path;
        self.with_id()
    }

    /// Whether the pair is judged by the equivalence tolerance: a kv_aligned decode, and
    /// every serving path (chunked, batched), whatever kv_aligned says. A server picks the
    /// chunk size and the batch for its own reasons, under the user's feet; the logits it
    /// returns must be the ones the sequence alone would get, so those paths are held to
    /// the promise of equivalence, not to the drift budget of a cache rebuilt token by token.
    pub fn equivalence(&self) -> bool {
        self.kv_aligned || !self.path.is_default()
    }

    /// The same pair on `engine` with `weights`, with its id.
    pub fn on(mut self, engine: Engine, weights: WeightFormat) -> Self {
        self.engine = engine;
        self.weights = weights;
        self.with_id()
    }

    fn with_id(mut self) -> Self {
        let mut id = format!(
            "{}.s{}.{}.kv{}.seed{}",
            self.prompt,
            self.span,
            self.dtype,
            u8::from(self.kv_aligned),
            self.seed
        );
        if let Some(part) = self.path.id_part() {
            id = format!("{id}.{part}");
        }
        if !self.engine.is_default() {
            id = format!("{id}.{}", self.engine);
        }
        if !self.weights.is_default() {
            id = format!("{id}.{}", self.weights);
        }
        self.id = id;
        self
    }

    /// The (engine, weights, dtype) whose one weight load runs this pair.
    pub fn load_key(&self) -> LoadKey {
        LoadKey {
            engine: self.engine,
            weights: self.weights,
            dtype: self.dtype,
        }
    }

    /// Id of one of the pair's runs, for example `p0_short.s128.bf16.kv1.seed0.prefill`.
    /// The run under test is named for its path (`….decode`, `….chunk8.chunked`).
    pub fn run_id(&self, mode: Mode) -> String {
        match mode {
            Mode::Prefill => format!("{}.prefill", self.id),
            Mode::Decode => format!("{}.{}", self.id, self.path.run_name()),
        }
    }

    fn matches(&self, r: &ExcludeRule) -> bool {
        r.prompt.as_ref().is_none_or(|p| *p == self.prompt)
            && r.span.is_none_or(|s| s == self.span)
            && r.dtype.is_none_or(|d| d == self.dtype)
            && r.kv_aligned.is_none_or(|k| k == self.kv_aligned)
            && r.seed.is_none_or(|s| s == self.seed)
            && r.engine.is_none_or(|e| e == self.engine)
            && r.weights.is_none_or(|w| w == self.weights)
            && r.path.is_none_or(|p| p == self.path)
    }
}

/// A prompt as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPrompt {
    /// Prompt id.
    pub id: String,
    /// Where its tokens come from.
    pub source: PromptSource,
    /// Token count P (with BOS for text prompts).
    pub len: usize,
    /// Token ids of a text prompt (random prompts get theirs per seed at run time).
    #[serde(skip)]
    pub text_ids: Option<Vec<u32>>,
}

/// What one weight load is: an implementation, its weight format and the run dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LoadKey {
    /// Implementation under test.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Run dtype.
    pub dtype: RunDtype,
}

impl Default for LoadKey {
    fn default() -> Self {
        LoadKey::REFERENCE
    }
}

impl LoadKey {
    /// The own decoder on dequantized f32 weights: the continuation reference, and the
    /// yardstick every other load's prefill is measured against.
    pub const REFERENCE: LoadKey = LoadKey {
        engine: Engine::Driftsweep,
        weights: WeightFormat::Dequantized,
        dtype: RunDtype::F32,
    };
}

impl fmt::Display for LoadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.engine, self.weights, self.dtype)
    }
}

/// One weight load, used by runs, as the continuation reference, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadGroup {
    /// Implementation (absent in manifests written before engines existed: the own decoder).
    #[serde(default)]
    pub engine: Engine,
    /// Weight format (absent in older manifests: dequantized).
    #[serde(default)]
    pub weights: WeightFormat,
    /// Dtype loaded.
    pub dtype: RunDtype,
    /// Pairs of this (engine, weights, dtype) run on it.
    pub runs: bool,
    /// It generates the sampled or greedy continuations (always the own decoder in f32).
    pub reference: bool,
    /// It computes the reference prefills other settings' prefills are measured against
    /// ([`Plan::reference`] only; absent in older manifests).
    #[serde(default)]
    pub yardstick: bool,
}

impl LoadGroup {
    /// What it is loaded for: "continuation", "runs" and "yardstick" joined by "+".
    pub fn purpose(&self) -> String {
        let parts: Vec<&str> = [
            (self.reference, "continuation"),
            (self.runs, "runs"),
            (self.yardstick, "yardstick"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        parts.join("+")
    }

    /// What it loads.
    pub fn key(&self) -> LoadKey {
        LoadKey {
            engine: self.engine,
            weights: self.weights,
            dtype: self.dtype,
        }
    }
}

/// The expanded sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Pairs, grouped by dtype (the order the device worker runs them in).
    pub pairs: Vec<PairSpec>,
    /// Prompts used by at least one pair, by id.
    pub prompts: BTreeMap<String, PlannedPrompt>,
    /// Pairs dropped by `exclude`.
    pub excluded: usize,
    /// Pairs the model under test cannot run, by id, with the reason (decided here, so they
    /// are SKIPPED with it rather than failed at run time).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, String>,
    /// What each (engine, weights, dtype) of the sweep can do.
    #[serde(skip)]
    pub capabilities: BTreeMap<LoadKey, Capabilities>,
    /// The reference setting: [`LoadKey::REFERENCE`], or for a user's own model the same on
    /// its engine.
    #[serde(skip)]
    pub reference: LoadKey,
}

impl Plan {
    /// Runs = 2 × pairs.
    pub fn run_count(&self) -> usize {
        2 * self.pairs.len()
    }

    /// The most positions any pair feeds (prompt + span); 0 for an empty plan.
    pub fn longest_sequence(&self) -> usize {
        self.pairs
            .iter()
            .map(|q| self.prompts[&q.prompt].len + q.span)
            .max()
            .unwrap_or(0)
    }

    /// Tokens a pair's (prefill, path under test) runs feed through the model, every row of
    /// a batch counted. A prefill on an engine that returns only the last row makes one
    /// forward per prefix: S·P + S(S+1)/2 tokens instead of P + S, quadratic in the span
    /// (and so does a chunked prefill there: one chunked sequence per span position).
    pub fn forward_tokens(&self, pair: &PairSpec) -> (usize, usize) {
        let p = self.prompts.get(&pair.prompt).map_or(0, |p| p.len);
        let s = pair.span;
        let every_row = self
            .capabilities
            .get(&pair.load_key())
            .is_none_or(|c| c.every_row);
        let by_prefix = s * p + s * (s + 1) / 2;
        let prefill = if every_row { p + s } else { by_prefix };
        // kv_aligned: prefill's own forward over P + S for the cache, then the span.
        let cached = if pair.kv_aligned { p + 2 * s } else { p + s };
        let decode = match pair.path {
            RunPath::Decode => cached,
            RunPath::Chunked(_) if every_row => cached,
            RunPath::Chunked(_) => by_prefix,
            RunPath::Batched(b) => b * cached,
            RunPath::BatchedPrefill(b) if every_row => b * (p + s),
            RunPath::BatchedPrefill(b) => b * by_prefix,
        };
        (prefill, decode)
    }

    /// The dtypes of the sweep, in the order their groups run.
    pub fn dtypes(&self) -> Vec<RunDtype> {
        let mut out: Vec<RunDtype> = Vec::new();
        for p in &self.pairs {
            if !out.contains(&p.dtype) {
                out.push(p.dtype);
            }
        }
        out
    }

    /// The (engine, weights, dtype) loads of the pairs, in plan order.
    pub fn load_keys(&self) -> Vec<LoadKey> {
        let mut out: Vec<LoadKey> = Vec::new();
        for p in &self.pairs {
            if !out.contains(&p.load_key()) {
                out.push(p.load_key());
            }
        }
        out
    }

    /// The weight loads the sweep needs, in the order the device worker makes them: one per
    /// (engine, weights, dtype), the own decoder's dequantized f32 first. That one is also
    /// the reference when a sampled or greedy continuation needs it, and the yardstick when
    /// other settings' prefills are measured against it; it is loaded for those alone when
    /// no pair runs on it.
    pub fn load_groups(&self, continuation: ContinuationMode) -> Vec<LoadGroup> {
        let mut groups: Vec<LoadGroup> = self
            .load_keys()
            .into_iter()
            .map(|k| LoadGroup {
                engine: k.engine,
                weights: k.weights,
                dtype: k.dtype,
                runs: true,
                reference: false,
                yardstick: false,
            })
            .collect();
        let reference = continuation != ContinuationMode::Random;
        let yardstick = self.pairs.iter().any(|p| p.load_key() != self.reference);
        if reference || yardstick {
            let g = match groups.iter_mut().position(|g| g.key() == self.reference) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(LoadGroup {
                        engine: self.reference.engine,
                        weights: self.reference.weights,
                        dtype: self.reference.dtype,
                        runs: false,
                        reference: false,
                        yardstick: false,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            g.reference = reference;
            g.yardstick = yardstick;
        }
        groups.sort_by_key(|g| g.key() != self.reference);
        groups
    }

    /// What to record for `pair` under the sweep's `trace` section.
    pub fn trace_selection(&self, t: &TraceConfig, pair: &PairSpec) -> TraceSelection {
        let p = self.prompts.get(&pair.prompt).map_or(0, |p| p.len);
        let end = p + pair.span;
        TraceSelection {
            layers: match &t.layers {
                AllOr::All => None,
                AllOr::List(v) => Some(v.iter().copied().collect()),
            },
            tensors: match &t.tensors {
                AllOr::All => TensorName::ALL.into_iter().collect(),
                AllOr::List(v) => v.iter().copied().collect(),
            },
            positions: match &t.positions {
                TracePositions::Span => (p..end).collect(),
                TracePositions::Last => [end - 1].into(),
                TracePositions::List(v) => v.iter().copied().filter(|&x| x < end).collect(),
            },
        }
    }

    /// The longest span any pair asks of (prompt, seed): its continuation is generated once at
    /// that length and shorter spans use a prefix.
    pub fn continuation_lengths(&self) -> BTreeMap<(String, u64), usize> {
        let mut out = BTreeMap::new();
        for p in &self.pairs {
            let e = out.entry((p.prompt.clone(), p.seed)).or_insert(0);
            *e = (*e).max(p.span);
        }
        out
    }
}

/// What an implementation can do with a model in one (engine, weights, dtype), or why that
/// combination does not exist.
pub type Support<'a> =
    &'a dyn Fn(Engine, WeightFormat, RunDtype) -> std::result::Result<Capabilities, String>;

/// Expands a validated config against a model's tokenizer and context length, and against
/// what each implementation under test can do (`support`): a combination that cannot exist
/// is bad input unless `exclude` drops it; a trace or fault an engine cannot apply is
/// refused; a pair it cannot run (kv_aligned without a cache prefix) is SKIPPED with why.
pub fn expand(cfg: &LoadedConfig, model: &ModelInfo, support: Support) -> Result<Plan> {
    let c = &cfg.config;
    let prompts = cfg.selected_prompts();
    let mut pairs = Vec::new();
    let mut excluded = 0;
    let mut caps = BTreeMap::new();
    // (engine, weights, dtype) outermost: one model load per group.
    for (ei, &engine) in c.sweep.engine.iter().enumerate() {
        for (wi, &weights) in c.sweep.weights.iter().enumerate() {
            for (di, &dtype) in c.sweep.dtype.iter().enumerate() {
                let before = pairs.len();
                for p in &prompts {
                    for &span in &c.sweep.span {
                        for &kv in &c.sweep.kv_aligned {
                            for &path in &c.sweep.path {
                                for &seed in &c.sweep.seed {
                                    let pair = PairSpec::new(&p.id, span, dtype, kv, seed)
                                        .on(engine, weights)
                                        .via(path);
                                    if c.exclude.iter().any(|r| pair.matches(r)) {
                                        excluded += 1;
                                    } else {
                                        pairs.push(pair);
                                    }
                                }
                            }
                        }
                    }
                }
                if pairs.len() == before {
                    continue;
                }
                let key = LoadKey {
                    engine,
                    weights,
                    dtype,
                };
                match support(engine, weights, dtype) {
                    Ok(k) => {
                        caps.insert(key, k);
                    }
                    Err(why) => {
                        // Name the axis entry that makes it impossible: the engine unless
                        // the engine alone is fine, then the weights, then the dtype.
                        let field = if support(engine, WeightFormat::Dequantized, RunDtype::F32)
                            .is_err()
                            && support(engine, weights, RunDtype::F32).is_err()
                        {
                            format!("sweep.engine[{ei}]")
                        } else if support(engine, weights, RunDtype::F32).is_err() {
                            format!("sweep.weights[{wi}]")
                        } else {
                            format!("sweep.dtype[{di}]")
                        };
                        return Err(Error::config(
                            &cfg.path,
                            field,
                            format!(
                                "engine `{engine}` with {weights} weights in {dtype} cannot run \
                                 `{}`: {why}; leave the combination out with `exclude: [{{engine: \
                                 {engine}, weights: {weights}, dtype: {dtype}}}]`",
                                model.source
                            ),
                        ));
                    }
                }
            }
        }
    }
    if pairs.is_empty() {
        return Err(Error::config(
            &cfg.path,
            "exclude",
            "the exclusions drop every pair",
        ));
    }

    let mut planned = BTreeMap::new();
    for p in &cfg.prompts {
        if !pairs.iter().any(|q| q.prompt == p.id) {
            continue;
        }
        let source = p.source.clone();
        let (len, text_ids) = match &source {
            PromptSource::Text(t) => {
                check_prompt_bytes(cfg, p, t, model)?;
                let ids = model.encode(t).map_err(|e| {
                    Error::config(
                        &cfg.path,
                        format!("prompts[{}].text", p.index),
                        e.to_string(),
                    )
                })?;
                (ids.len(), Some(ids))
            }
            PromptSource::RandomTokens(n) => (n.get(), None),
        };
        planned.insert(
            p.id.clone(),
            PlannedPrompt {
                id: p.id.clone(),
                source,
                len,
                text_ids,
            },
        );
    }

    let ctx = model.context_len();
    for (i, &span) in c.sweep.span.iter().enumerate() {
        for pp in planned.values() {
            let used = pairs.iter().any(|q| q.prompt == pp.id && q.span == span);
            // Checked: a span or random_tokens near usize::MAX must not wrap past the check.
            let needs = pp.len.checked_add(span);
            if used && needs.is_none_or(|n| n > ctx) {
                return Err(Error::config(
                    &cfg.path,
                    format!("sweep.span[{i}]"),
                    format!(
                        "span {span} after prompt `{}` ({} tokens) needs {} positions, but `{}` has a context of {ctx}",
                        pp.id,
                        pp.len,
                        needs.map_or("more than 2^64".to_string(), |n| n.to_string()),
                        model.source
                    ),
                ));
            }
        }
    }
    for (field, asked) in [
        ("trace", cfg.config.trace.is_some()),
        ("inject", cfg.config.inject.is_some()),
    ] {
        if let Some(k) = caps
            .iter()
            .find(|(_, k)| asked && !k.probes)
            .map(|(k, _)| k)
        {
            return Err(Error::config(
                &cfg.path,
                field,
                format!(
                    "engine `{}` has no layer taps or fault injection; only the `driftsweep` \
                     engine traces and injects (leave the other engine out of this sweep)",
                    k.engine
                ),
            ));
        }
    }
    let skipped = pairs
        .iter()
        .filter_map(|q| skip_reason(q, &caps[&q.load_key()]).map(|why| (q.id.clone(), why)))
        .collect();
    let plan = Plan {
        pairs,
        prompts: planned,
        excluded,
        skipped,
        capabilities: caps,
        reference: LoadKey {
            engine: if model.is_custom() {
                Engine::Custom
            } else {
                Engine::Driftsweep
            },
            ..LoadKey::REFERENCE
        },
    };
    check_trace_and_inject(cfg, model, &plan)?;
    Ok(plan)
}

/// Why a pair cannot run on an implementation with `caps`, if it cannot: decided when the
/// sweep is planned, so the pair is SKIPPED with the reason.
fn skip_reason(q: &PairSpec, caps: &Capabilities) -> Option<String> {
    if q.kv_aligned && !q.path.has_kv_aligned() {
        return Some(format!(
            "kv_aligned does not apply to path `{}`: a batched prefill carries no cache from \
             a prompt into a span (its kv_aligned = false pair is the one to read)",
            q.path
        ));
    }
    if q.kv_aligned && !caps.cache_prefix {
        return Some(format!(
            "kv_aligned needs the prefill's own cache, and engine `{}` cannot cut its cache \
             back to a prefix",
            q.engine
        ));
    }
    if q.path.batch() > 1 && !caps.batch {
        return Some(format!(
            "path `{}` needs batched forwards, and engine `{}` runs one sequence at a time",
            q.path, q.engine
        ));
    }
    None
}

/// The most bytes a prompt may have per position of the model's context: a text that long
/// cannot fit (no tokenizer packs this many bytes into a token), so it is refused before
/// tokenizing it, which would cost time and memory in proportion.
const MAX_PROMPT_BYTES_PER_POSITION: usize = 64;

fn check_prompt_bytes(
    cfg: &LoadedConfig,
    p: &crate::config::Prompt,
    text: &str,
    model: &ModelInfo,
) -> Result<()> {
    let ctx = model.context_len();
    let max = ctx.saturating_mul(MAX_PROMPT_BYTES_PER_POSITION);
    if text.len() > max {
        return Err(Error::config(
            &cfg.path,
            format!("prompts[{}]", p.index),
            format!(
                "`{}` is {} bytes, more than could fit in the context of `{}` ({ctx} \
                 positions, at most {MAX_PROMPT_BYTES_PER_POSITION} bytes each)",
                p.id,
                text.len(),
                model.source
            ),
        ));
    }
    Ok(())
}

/// Layers and positions named by `trace` and `inject` must exist in this model and sweep.
fn check_trace_and_inject(cfg: &LoadedConfig, model: &ModelInfo, plan: &Plan) -> Result<()> {
    let n = model.sizes().num_layers;
    let longest = plan.longest_sequence();
    if let Some(t) = &cfg.config.trace {
        if let AllOr::List(ls) = &t.layers
            && let Some(i) = ls.iter().position(|&l| l >= n)
        {
            return Err(Error::config(
                &cfg.path,
                format!("trace.layers[{i}]"),
                format!(
                    "layer {} does not exist: `{}` has layers 0–{}",
                    ls[i],
                    model.source,
                    n - 1
                ),
            ));
        }
        if let TracePositions::List(ps) = &t.positions
            && let Some(i) = ps.iter().position(|&p| p >= longest)
        {
            return Err(Error::config(
                &cfg.path,
                format!("trace.positions[{i}]"),
                format!(
                    "position {} lies beyond every sequence of the sweep (longest: positions 0–{})",
                    ps[i],
                    longest - 1
                ),
            ));
        }
    }
    let path_index = |want: &dyn Fn(RunPath) -> bool| {
        cfg.config
            .sweep
            .path
            .iter()
            .position(|&p| want(p) && plan.pairs.iter().any(|q| q.path == p))
    };
    // Taps record one sequence's rows; a batched forward holds several.
    if cfg.config.trace.is_some()
        && let Some(i) = path_index(&|p| p.batch() > 1)
    {
        return Err(Error::config(
            &cfg.path,
            format!("sweep.path[{i}]"),
            format!(
                "layer traces follow one sequence, and path `{}` runs several in one forward; \
                 trace decode or chunked paths, or leave the batched ones out of this sweep",
                cfg.config.sweep.path[i]
            ),
        ));
    }
    // A fault that only one kind of path can show needs a pair on that path, or its negative
    // control would pass for the wrong reason.
    if let Some(i) = &cfg.config.inject {
        let chunked = path_index(&|p| matches!(p, RunPath::Chunked(c) if c > 1));
        if i.chunk_position_shift.unwrap_or(0) > 0 && chunked.is_none() {
            return Err(Error::config(
                &cfg.path,
                "inject.chunk_position_shift",
                "no pair takes a chunked path with chunks of 2 or more tokens \
                 (`sweep.path: [chunked:C]`), so the fault would change nothing",
            ));
        }
        if i.cross_row_cache && path_index(&|p| p.batch() > 1).is_none() {
            return Err(Error::config(
                &cfg.path,
                "inject.cross_row_cache",
                "no pair takes a batched path of 2 or more sequences \
                 (`sweep.path: [batched:B]`), so there is no other row to read",
            ));
        }
    }
    // A forward that believes it is `shift` positions further on must still be inside the
    // context, or the shifted position would index past the rotary tables.
    for (field, shift) in cfg.config.inject.iter().flat_map(|i| {
        [
            ("inject.position_shift", i.position_shift),
            ("inject.chunk_position_shift", i.chunk_position_shift),
        ]
    }) {
        if let Some(shift) = shift
            && longest
                .checked_add(shift)
                .is_none_or(|n| n > model.context_len())
        {
            return Err(Error::config(
                &cfg.path,
                field,
                format!(
                    "a shift of {shift} moves the longest sequence ({longest} positions) past \
                     the context of `{}` ({})",
                    model.source,
                    model.context_len()
                ),
            ));
        }
    }
    // Widening a window needs a window: without one the fault would change nothing and its
    // control would pass for the wrong reason.
    if let Some(i) = &cfg.config.inject
        && i.window_shift.unwrap_or(0) > 0
        && model.family.sliding_window().is_none()
    {
        return Err(Error::config(
            &cfg.path,
            "inject.window_shift",
            format!(
                "`{}` has no sliding-window attention, so there is no window to widen",
                model.source
            ),
        ));
    }
    if let Some(i) = &cfg.config.inject
        && let Some(l) = i.layer
        && l >= n
    {
        return Err(Error::config(
            &cfg.path,
            "inject.layer",
            format!(
                "layer {l} does not exist: `{}` has layers 0–{}",
                model.source,
                n - 1
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan_of(yaml: &str) -> Result<Plan> {
        let cfg = crate::config::parse(Path::new("t.yaml"), yaml)?;
        let info = ModelInfo::inspect(&cfg.config.model.source)?;
        expand(&cfg, &info, &|e, w, d| {
            info.support(e, w, d).map_err(String::from)
        })
    }

    const BASE: &str = r#"
name: t
model: {source: "builtin:tiny-llama"}
prompts:
  - {id: p0_short, text: "What is the capital of France?"}
  - {id: r8, random_tokens: 8}
sweep:
  span: [32, 128, 512]
  dtype: [bf16, f16]
  kv_aligned: [false, true]
  seed: [0, 1, 2]
"#;

    #[test]
    fn cartesian_product_counts() {
        let p = plan_of(BASE).unwrap();
        assert_eq!(p.pairs.len(), 2 * 3 * 2 * 2 * 3);
        assert_eq!(p.run_count(), 144);
        assert_eq!(p.dtypes(), vec![RunDtype::Bf16, RunDtype::F16]);
        assert_eq!(p.prompts["r8"].len, 8);
        assert!(p.prompts["p0_short"].len > 1);
    }

    #[test]
    fn run_ids_are_stable_and_readable() {
        let p = plan_of(BASE).unwrap();
        let pair = p
            .pairs
            .iter()
            .find(|q| q.prompt == "p0_short" && q.span == 128 && q.kv_aligned && q.seed == 0)
            .unwrap();
        assert_eq!(
            pair.run_id(Mode::Prefill),
            "p0_short.s128.bf16.kv1.seed0.prefill"
        );
        let mut ids: Vec<_> = p.pairs.iter().map(|q| q.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), p.pairs.len(), "ids are unique");
    }

    #[test]
    fn exclude_is_a_partial_match() {
        let yaml = format!(
            "{BASE}exclude:\n  - {{span: 512, dtype: bf16}}\n  - {{prompt: r8, kv_aligned: 0}}\n"
        );
        let p = plan_of(&yaml).unwrap();
        // 12 pairs of (512, bf16) per... : 2 prompts × 2 kv × 3 seeds = 12; r8 kv0: 3 spans × 2
        // dtypes × 3 seeds = 18; overlap (r8, 512, bf16, kv0): 3.
        assert_eq!(p.excluded, 12 + 18 - 3);
        assert_eq!(p.pairs.len(), 72 - 27);
        assert!(
            !p.pairs
                .iter()
                .any(|q| q.span == 512 && q.dtype == RunDtype::Bf16)
        );
    }

    #[test]
    fn sweep_prompt_selects() {
        let yaml = BASE.replace("  seed: [0, 1, 2]", "  seed: [0, 1, 2]\n  prompt: [r8]");
        let p = plan_of(&yaml).unwrap();
        assert_eq!(p.pairs.len(), 36);
        assert_eq!(p.prompts.keys().collect::<Vec<_>>(), vec!["r8"]);
    }

    #[test]
    fn span_beyond_context_is_an_error() {
        let e = plan_of(&BASE.replace("[32, 128, 512]", "[32, 2045]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sweep.span[1]"), "{e}");
        assert!(e.contains("context of 2048"), "{e}");
    }

    #[test]
    fn excluding_everything_is_an_error() {
        let e = plan_of(&format!(
            "{BASE}exclude:\n  - {{seed: 0}}\n  - {{seed: 1}}\n  - {{seed: 2}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("drop every pair"), "{e}");
    }

    #[test]
    fn trace_selection_and_its_errors() {
        let yaml = format!("{BASE}trace: {{layers: [0, 11], tensors: [q], positions: last}}\n");
        let p = plan_of(&yaml).unwrap();
        let cfg = crate::config::parse(Path::new("t.yaml"), &yaml).unwrap();
        let pair = p
            .pairs
            .iter()
            .find(|q| q.prompt == "r8" && q.span == 32)
            .unwrap();
        let sel = p.trace_selection(cfg.config.trace.as_ref().unwrap(), pair);
        assert_eq!(sel.positions, [8 + 32 - 1].into());
        assert_eq!(sel.layers, Some([0, 11].into()));
        let e = plan_of(&format!(
            "{BASE}trace: {{layers: [12], tensors: all, positions: span}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("trace.layers[0]") && e.contains("layers 0–11"),
            "{e}"
        );
        let e = plan_of(&format!(
            "{BASE}trace: {{layers: all, tensors: all, positions: [5, 9999]}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("trace.positions[1]"), "{e}");
        let e = plan_of(&format!(
            "{BASE}inject: {{tensor: q, layer: 40, epsilon: 0.1}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("inject.layer"), "{e}");
    }

    #[test]
    fn load_groups_add_the_f32_reference_once() {
        let p = plan_of(BASE).unwrap();
        let g = p.load_groups(ContinuationMode::Sample);
        assert_eq!(g.len(), 3);
        assert_eq!(
            (g[0].dtype, g[0].purpose()),
            (RunDtype::F32, "continuation+yardstick".into())
        );
        // Random continuations need no reference, but bf16 and f16 prefills are still
        // measured against the f32 one: a yardstick-only load.
        let g = p.load_groups(ContinuationMode::Random);
        assert_eq!(g.len(), 3);
        assert_eq!(
            (g[0].dtype, g[0].purpose()),
            (RunDtype::F32, "yardstick".into())
        );
        let p = plan_of(&BASE.replace("[bf16, f16]", "[bf16, f32]")).unwrap();
        let g = p.load_groups(ContinuationMode::Greedy);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].dtype, g[0].purpose()),
            (RunDtype::F32, "continuation+runs+yardstick".into())
        );
    }

    #[test]
    fn continuation_lengths_take_the_longest_span() {
        let p = plan_of(BASE).unwrap();
        let l = p.continuation_lengths();
        assert_eq!(l.len(), 2 * 3);
        assert!(l.values().all(|&n| n == 512));
    }
}
