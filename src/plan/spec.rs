//! What a plan is made of: the pairs a sweep expands into, with stable readable ids, the
//! prompts they use and the (engine, weights, dtype) groups that load a model once.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{
    AllOr, ContinuationMode, ExcludeRule, FirstDivergence, PromptSource, TraceConfig,
    TracePositions,
};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::model::Capabilities;
use crate::path::{CacheSource, RunPath};
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
    /// Where a kv_aligned run's prompt cache comes from on this pair's engine (set by the
    /// plan; absent for kv_aligned = false, and in older records). Not part of the id: it
    /// follows from the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_source: Option<CacheSource>,
    /// The absolute span positions compared (`positions:` in the sweep file), sorted; absent:
    /// every span position. Not part of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<usize>>,
    /// How the first divergent position is found (absent: among the compared positions).
    #[serde(default, skip_serializing_if = "super::positions::is_compared")]
    pub first_divergence: FirstDivergence,
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
            cache_source: None,
            positions: None,
            first_divergence: FirstDivergence::Compared,
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

    /// Whether an `exclude` rule drops this pair.
    pub(super) fn matches(&self, r: &ExcludeRule) -> bool {
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
        let prefill = match &pair.positions {
            _ if every_row => p + s,
            // One forward of its prefix per compared position.
            Some(at) => at.iter().map(|&x| x + 1).sum(),
            None => by_prefix,
        };
        // kv_aligned: prefill's own forward over P + S for the cache (cut back), or the prompt
        // alone (prompt-only prefill), then the span. A one-sequence path starts from the cut-
        // back cache the prefill run kept, so it feeds the span alone (a traced run, not
        // priced here, makes the forward again).
        let cut_back = if pair.path.batch() == 1 { s } else { p + 2 * s };
        let cached = match pair.cache_source {
            Some(CacheSource::CutBack) => cut_back,
            Some(CacheSource::PromptPrefill) => p + s,
            // Pairs made outside a plan carry no source: the own decoder's cut-back cache.
            None if pair.kv_aligned => cut_back,
            None => p + s,
        };
        (prefill, pair.path.tokens_fed(p, s, cached, every_row))
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
