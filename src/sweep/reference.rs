//! A pair's two paths held against the reference (docs/design.md, "Three comparisons"):
//! where the reference logits come from, the two comparisons and their judgement. The
//! reference is either the own decoder's f32 prefill (the yardstick the worker keeps anyway)
//! or transformers in a worker process, started once per sweep and asked once per sequence.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use candle_core::{DType, Tensor};

use crate::compare::{self, Metrics};
use crate::config::{ReferenceConfig, ReferenceDtype, ReferenceEngine};
use crate::limits::Thresholds;
use crate::model::source::Weights;
use crate::plan::PairSpec;
use crate::reference::{Handle, RefDtype, ReferenceError, TransformersWorker};
use crate::run::{self, RunOutput};
use crate::store::{NotCompared, RefComparison, ReferenceCheck};

/// Where a sweep's reference logits come from.
pub(super) struct ReferenceSource {
    /// The reference in words, as records name it.
    pub(super) label: String,
    transformers: Option<Transformers>,
}

/// The transformers reference of a sweep: its checkpoint, loaded into the process-wide
/// worker at the first pair that needs it.
struct Transformers {
    /// The checkpoint it reads: a GGUF file or a Hugging Face directory.
    model: Result<PathBuf, String>,
    dtype: RefDtype,
    state: Mutex<State>,
    /// Span rows by sequence ([`super::pair::SharedPrefill::key`]), f32 on the host.
    rows: Mutex<HashMap<String, Tensor>>,
}

enum State {
    NotLoaded,
    Loaded(Handle),
    /// It cannot run here: every pair says why.
    Unavailable(NotCompared),
}

/// One worker process for the whole process: the sweeps of a `models:` file share it, so
/// Python and PyTorch start once. A worker that failed is dropped; the next load starts a
/// fresh one.
static WORKER: Mutex<Option<TransformersWorker>> = Mutex::new(None);

impl ReferenceSource {
    /// The source `cfg` names for a model whose weights are `weights`.
    pub(super) fn new(cfg: &ReferenceConfig, weights: &Weights) -> Self {
        let transformers = (cfg.engine() == ReferenceEngine::Transformers).then(|| Transformers {
            model: checkpoint(weights),
            dtype: match cfg.dtype() {
                ReferenceDtype::F32 => RefDtype::F32,
                ReferenceDtype::F64 => RefDtype::F64,
            },
            state: Mutex::new(State::NotLoaded),
            rows: Mutex::new(HashMap::new()),
        });
        Self {
            label: cfg.label(),
            transformers,
        }
    }

    /// Whether the reference is the own decoder's prefill (kept by the worker).
    pub(super) fn is_own(&self) -> bool {
        self.transformers.is_none()
    }

    /// The transformers reference's span rows over `ids` (prompt, then span; the span starts
    /// at `span_start`), kept under `key`, or why there are none.
    pub(super) fn transformers_rows(
        &self,
        key: &str,
        ids: &[u32],
        span_start: usize,
    ) -> Result<Tensor, NotCompared> {
        let Some(t) = &self.transformers else {
            return Err(failed("the reference is the own decoder".into()));
        };
        if let Some(rows) = lock(&t.rows).get(key) {
            return Ok(rows.clone());
        }
        let rows = t.rows_of(ids, span_start)?;
        lock(&t.rows).insert(key.to_string(), rows.clone());
        Ok(rows)
    }
}

impl Transformers {
    fn rows_of(&self, ids: &[u32], span_start: usize) -> Result<Tensor, NotCompared> {
        let mut state = lock(&self.state);
        let mut worker = lock(&WORKER);
        if matches!(*state, State::NotLoaded) {
            *state = self.load(&mut worker);
        }
        let handle = match &*state {
            State::Loaded(h) => *h,
            State::Unavailable(why) => return Err(why.clone()),
            State::NotLoaded => return Err(failed("the reference did not load".into())),
        };
        let Some(w) = worker.as_mut() else {
            return Err(failed("the transformers worker is gone".into()));
        };
        match w.forward(handle, ids) {
            Ok(full) => full
                .narrow(0, span_start, ids.len().saturating_sub(span_start))
                .and_then(|r| r.to_dtype(DType::F32))
                .map_err(|e| failed(format!("reading the reference's logits: {e}"))),
            Err(e) => {
                // It may have died: this model is not asked again, the next one starts afresh.
                *worker = None;
                let why = failed(format!("the transformers reference failed: {e}"));
                *state = State::Unavailable(why.clone());
                Err(why)
            }
        }
    }

    /// Loads the checkpoint into the shared worker, starting it when there is none.
    fn load(&self, worker: &mut Option<TransformersWorker>) -> State {
        let model = match &self.model {
            Ok(m) => m,
            Err(why) => return State::Unavailable(failed(why.clone())),
        };
        if worker.is_none() {
            match TransformersWorker::start() {
                Ok(w) => *worker = Some(w),
                Err(e @ ReferenceError::NotInstalled { .. }) => {
                    return State::Unavailable(NotCompared {
                        skipped: true,
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    return State::Unavailable(failed(format!("starting transformers: {e}")));
                }
            }
        }
        let Some(w) = worker.as_mut() else {
            return State::Unavailable(failed("the transformers worker is gone".into()));
        };
        match w.load(model, self.dtype) {
            Ok(loaded) => State::Loaded(loaded.handle),
            // An architecture or a file transformers does not read: this model has no
            // reference here, which the report says; its pairs keep their own verdicts.
            Err(e) if e.is_bad_input() => State::Unavailable(NotCompared {
                skipped: true,
                reason: format!("transformers cannot read {}: {e}", model.display()),
            }),
            Err(e) => State::Unavailable(failed(format!(
                "transformers could not load {}: {e}",
                model.display()
            ))),
        }
    }
}

fn failed(reason: String) -> NotCompared {
    NotCompared {
        skipped: false,
        reason,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The checkpoint transformers reads for `weights`.
fn checkpoint(weights: &Weights) -> Result<PathBuf, String> {
    match weights {
        Weights::Gguf(path) => Ok(path.clone()),
        Weights::Safetensors(files) => files
            .first()
            .and_then(|f| f.parent())
            .map(PathBuf::from)
            .ok_or_else(|| "the model lists no safetensors file".to_string()),
        Weights::Builtin => Err("the built-in model has no checkpoint transformers reads".into()),
    }
}

/// What a pair needs to be held against the reference.
pub(super) struct Against<'a> {
    pub(super) pair: &'a PairSpec,
    pub(super) prefill: Option<&'a RunOutput>,
    pub(super) decode: Option<&'a RunOutput>,
    pub(super) limits: Thresholds,
    /// The model's sliding window, for the words about a convention.
    pub(super) window: Option<usize>,
}

impl Against<'_> {
    /// Both paths against the reference's span rows `reference` (row 0 at the span's start,
    /// or exactly the compared positions' rows), judged.
    pub(super) fn check(&self, source: &str, reference: &Tensor) -> ReferenceCheck {
        let judged = |out: Option<&RunOutput>| {
            out.map(|o| match self.metrics(reference, o) {
                Ok(m) => {
                    let (pass, reason) =
                        crate::verdict::judge_reference(&m, self.pair.dtype, &self.limits);
                    RefComparison {
                        metrics: m,
                        pass,
                        reason,
                    }
                }
                Err(e) => RefComparison {
                    metrics: Metrics::default(),
                    pass: false,
                    reason: format!("could not be compared: {e}"),
                },
            })
        };
        let (prefill, decode) = (judged(self.prefill), judged(self.decode));
        let convention = convention(self.window, self.span_start(), [&prefill, &decode]);
        ReferenceCheck {
            source: source.to_string(),
            limits: self.limits,
            prefill,
            decode,
            not_compared: None,
            convention,
        }
    }

    /// The check of a pair whose reference did not compute.
    pub(super) fn not_compared(&self, source: &str, why: NotCompared) -> ReferenceCheck {
        ReferenceCheck {
            source: source.to_string(),
            limits: self.limits,
            prefill: None,
            decode: None,
            not_compared: Some(why),
            convention: None,
        }
    }

    fn span_start(&self) -> Option<usize> {
        self.prefill.or(self.decode).map(|o| o.span_start)
    }

    /// `out` against the reference over the pair's compared positions; reference first.
    fn metrics(&self, reference: &Tensor, out: &RunOutput) -> crate::Result<Metrics> {
        let reference = reference
            .to_device(out.logits.device())
            .map_err(|e| crate::Error::Internal(format!("moving the reference's logits: {e}")))?;
        let whole = reference.dims().first() == Some(&self.pair.span);
        let (r, o, start) = match &self.pair.positions {
            Some(at) if whole => (
                run::select_rows(&reference, out.span_start, at)?,
                run::rows_at(out, self.pair.span, at)?,
                0,
            ),
            Some(at) => (reference, run::rows_at(out, self.pair.span, at)?, 0),
            None => (reference, out.logits.clone(), out.span_start),
        };
        let m = compare::compare_tensors(&r, &o, start, self.limits.max_abs_diff())
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        Ok(match &self.pair.positions {
            Some(at) => super::pair::at_positions(m, at),
            None => m,
        })
    }
}

/// In words, when a path parts from the reference exactly at the window's edge `w` while
/// the positions before it agree: the two admit different numbers of keys from there.
/// Hugging Face's mask admits w keys (`kv_idx > q_idx - w`): a path that parts at position
/// w admits one more (w + 1, the cache keeps one key too many), one that parts at w − 1 one
/// fewer.
fn convention(
    window: Option<usize>,
    span_start: Option<usize>,
    paths: [&Option<RefComparison>; 2],
) -> Option<String> {
    let (w, start) = (window?, span_start?);
    let words: Vec<String> = ["prefill", "decode"]
        .into_iter()
        .zip(paths)
        .filter_map(|(name, c)| {
            let c = c.as_ref().filter(|c| !c.pass)?;
            let at = c.metrics.first_divergent_pos?;
            let (edge, how) = if at == w {
                (w, "one key more")
            } else if at + 1 == w {
                (w - 1, "one key fewer")
            } else {
                return None;
            };
            // Agreement before the edge must have been seen for the words to hold.
            (edge > start).then(|| {
                format!("{name} admits {how} than the reference from position {edge} (window {w})")
            })
        })
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing_at(pos: usize) -> Option<RefComparison> {
        Some(RefComparison {
            metrics: Metrics {
                first_divergent_pos: Some(pos),
                ..Metrics::default()
            },
            pass: false,
            reason: String::new(),
        })
    }

    #[test]
    fn parting_at_the_window_edge_is_named_as_one_key_more() {
        let words = convention(Some(8), Some(4), [&None, &failing_at(8)]).unwrap();
        assert_eq!(
            words,
            "decode admits one key more than the reference from position 8 (window 8)"
        );
    }

    #[test]
    fn parting_one_before_the_edge_is_one_key_fewer() {
        let words = convention(Some(8), Some(4), [&failing_at(7), &None]).unwrap();
        assert!(words.starts_with("prefill admits one key fewer"), "{words}");
    }

    #[test]
    fn parting_elsewhere_or_unseen_agreement_says_nothing() {
        // Away from the edge.
        assert_eq!(convention(Some(8), Some(4), [&failing_at(11), &None]), None);
        // The span starts at the edge: agreement before it was never seen.
        assert_eq!(convention(Some(8), Some(8), [&failing_at(8), &None]), None);
        // No window.
        assert_eq!(convention(None, Some(4), [&failing_at(8), &None]), None);
    }
}
