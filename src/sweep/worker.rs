//! The device worker: all model work of a sweep, group by group (one weight load per
//! (model, dtype, device)). It fixes the token ids first, then runs each group's pairs, on
//! one thread or on several lanes sharing the group's model ([`super::lanes`]), compares and
//! judges each pair on the device that holds its logits, analyses traces, and sends only
//! records to the writer. It checks the stop flag before every weight load and every run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use crate::config::{ContinuationMode, LoadedConfig, TraceOn};
use crate::model::{ModelInfo, ModelUnderTest};
use crate::plan::{LoadGroup, LoadKey, Mode, PairSpec, Plan};
use crate::run::{self, Instruments, RunOutput};
use crate::store::{ModelLoad, PairRecord, SequenceRecord, TraceFile, Yardstick};
use crate::tokens;
use crate::trace;
use crate::trace::TraceSelection;

use super::events::StopFlag;
use super::lanes::{self, Lanes};
use super::pair::{
    BoardRole, PairInput, PostGuard, PrefillBoard, SharedPrefill, run_pair, token_key,
};

/// What the device worker tells the writer.
pub(super) enum WorkerMsg {
    /// Token ids fixed in this session, by [`token_key`].
    Tokens(BTreeMap<String, SequenceRecord>),
    /// Weights were loaded.
    Loaded(ModelLoad),
    /// A run (or a traced re-run) begins.
    Started(String),
    /// The pair cannot run on this device (its dtype is unsupported there).
    Skipped { pair: usize, reason: String },
    /// A run ended.
    Run {
        pair: usize,
        mode: Mode,
        result: Result<RunDone, String>,
        /// Run id whose result this is, when it was reused rather than computed.
        reused_from: Option<String>,
    },
    /// A pair compared and judged where its logits are.
    Pair(Box<PairRecord>),
    /// A pair's analysed trace, or why its traced runs failed.
    Trace(Box<TraceFile>),
}

/// A finished run as the writer records it: the logits stay with the device worker, and only
/// a host copy made for storing them travels.
pub(super) struct RunDone {
    pub(super) wall_s: f64,
    pub(super) span_start: usize,
    pub(super) positions: usize,
    pub(super) vocab: usize,
    pub(super) forwards: usize,
    pub(super) tokens_fed: usize,
    /// The logits in host memory, when the sweep keeps them.
    pub(super) logits: Option<Vec<f32>>,
    /// A digest per row, to tell bit-identical runs of different paths apart.
    pub(super) row_digests: Vec<String>,
}

impl RunDone {
    fn new(out: &RunOutput, keep_logits: bool) -> crate::Result<Self> {
        let host = out.host_logits()?;
        Ok(Self {
            row_digests: crate::compare::row_digests(&host, out.vocab),
            wall_s: out.wall_s,
            span_start: out.span_start,
            positions: out.positions,
            vocab: out.vocab,
            forwards: out.forwards,
            tokens_fed: out.tokens_fed,
            logits: keep_logits.then_some(host),
        })
    }
}

/// What the device worker is asked to do.
#[derive(Debug, Clone, Default)]
pub(super) struct Work {
    /// Indices into `plan.pairs` to compute, in plan order.
    pub(super) todo: Vec<usize>,
    /// Token ids already fixed by an earlier session; missing or shorter ones are generated.
    pub(super) known_tokens: BTreeMap<String, SequenceRecord>,
}

type Loaded = Result<Box<dyn ModelUnderTest>, String>;
type Sequences = HashMap<(String, u64), Result<SequenceRecord, String>>;

/// The worker's state: what it runs, where it sends records, and when it must stop.
pub(super) struct Worker {
    pub(super) cfg: LoadedConfig,
    pub(super) info: ModelInfo,
    pub(super) plan: Plan,
    pub(super) device: run::OpenDevice,
    pub(super) tx: SyncSender<WorkerMsg>,
    pub(super) stop: StopFlag,
    /// Stop (as on a request) once this many runs have started: a deterministic interrupt.
    pub(super) stop_after_runs: Option<usize>,
    pub(super) runs_started: AtomicUsize,
    /// Reference prefill logits by [`SharedPrefill::key`], for the yardstick.
    pub(super) yardsticks: Mutex<HashMap<String, candle_core::Tensor>>,
    /// Some pair of the work runs on another setting than the reference.
    pub(super) plan_needs_yardsticks: bool,
    /// What both paths of every pair are also held against.
    pub(super) reference: super::reference::ReferenceSource,
    /// `--lanes N`, when the user chose.
    pub(super) lanes: Option<usize>,
    /// CPU threads this process uses (candle's thread count).
    pub(super) threads: usize,
}

impl Worker {
    /// Does the work; returns when it is done, when a stop was requested, or when the writer
    /// hung up.
    pub(super) fn run(mut self, mut work: Work) {
        // Pairs the model cannot run are SKIPPED with the plan's reason, before any load.
        let (skipped, todo): (Vec<usize>, Vec<usize>) = std::mem::take(&mut work.todo)
            .into_iter()
            .partition(|i| self.plan.skipped.contains_key(&self.plan.pairs[*i].id));
        for idx in skipped {
            let reason = self.plan.skipped[&self.plan.pairs[idx].id].clone();
            if !self.send(WorkerMsg::Skipped { pair: idx, reason }) {
                return;
            }
        }
        work.todo = todo;
        self.plan_needs_yardsticks = work
            .todo
            .iter()
            .any(|i| self.plan.pairs[*i].load_key() != self.plan.reference);
        let todo: Vec<&PairSpec> = work.todo.iter().map(|i| &self.plan.pairs[*i]).collect();
        let mode = self.cfg.config.continuation;
        let (known, to_generate) = self.tokens_to_fix(&todo, &work.known_tokens);
        let needs_reference = mode != ContinuationMode::Random && !to_generate.is_empty();
        let groups: Vec<LoadGroup> = self
            .plan
            .load_groups(mode)
            .into_iter()
            .map(|mut g| {
                g.runs = g.runs && todo.iter().any(|p| p.load_key() == g.key());
                g.reference = g.reference && needs_reference;
                g.yardstick = g.yardstick && todo.iter().any(|p| p.load_key() != g.key());
                g
            })
            .filter(|g| g.runs || g.reference || g.yardstick)
            .collect();
        if self.stop.requested() {
            return;
        }
        // Each group's pairs cut into units of work, and the lanes they run on.
        let orders: HashMap<LoadKey, (Vec<Vec<usize>>, Lanes)> = groups
            .iter()
            .map(|g| {
                let mut units = units(&self.plan, self.group_order(&work.todo, g.key()));
                let lanes = self.lanes_for(g.key(), units.len());
                if lanes.count > 1 {
                    longest_first(&self.plan, &mut units);
                }
                (g.key(), (units, lanes))
            })
            .collect();
        // The reference group, when there is one, comes first.
        let mut reference: Option<Loaded> = groups
            .first()
            .filter(|g| g.reference)
            .map(|g| self.load(g.key(), &g.purpose(), orders[&g.key()].1));
        let Some(seqs) = self.fix_tokens(known, to_generate, reference.as_ref()) else {
            return;
        };
        for group in groups.iter().filter(|g| g.runs || g.yardstick) {
            if self.stop.requested() {
                return;
            }
            let key = group.key();
            if let Err(reason) = run::dtype_support(&self.device.device, key.dtype) {
                reference = None;
                for &idx in work
                    .todo
                    .iter()
                    .filter(|i| self.plan.pairs[**i].load_key() == key)
                {
                    let reason = reason.to_string();
                    if !self.send(WorkerMsg::Skipped { pair: idx, reason }) {
                        return;
                    }
                }
                continue;
            }
            let (units, lanes) = &orders[&key];
            // The reference model is dropped here unless its group also runs pairs.
            let model = match reference.take() {
                Some(r) if group.reference => r,
                _ => self.load(key, &group.purpose(), *lanes),
            };
            if group.runs && !self.run_group(&model, units, *lanes, &seqs) {
                return;
            }
            if group.yardstick && !self.fill_yardsticks(&model, &work.todo, &seqs) {
                return;
            }
        }
    }

    /// The reference prefill of every (prompt, span, seed) some pair of another setting
    /// runs, on the reference model, unless one of its own pairs already made it. False when
    /// the worker must stop.
    fn fill_yardsticks(&self, model: &Loaded, todo: &[usize], seqs: &Sequences) -> bool {
        let Ok(model) = model else {
            return true;
        };
        for &idx in todo {
            let pair = &self.plan.pairs[idx];
            let key = SharedPrefill::key(pair);
            if pair.load_key() == self.plan.reference || self.yardstick(&key).is_some() {
                continue;
            }
            if self.stop.requested() {
                return false;
            }
            let Some(Ok(seq)) = seqs.get(&(pair.prompt.clone(), pair.seed)) else {
                continue;
            };
            let mut ids = seq.prompt.clone();
            ids.extend_from_slice(&seq.continuation[..pair.span]);
            // A failed reference prefill leaves its pairs without a yardstick; nothing else.
            if let Ok(out) = run::prefill(model.as_ref(), &ids, seq.prompt.len(), None) {
                self.keep_yardstick(key, out.logits);
            }
        }
        true
    }

    /// Keeps the reference setting's prefill for the yardstick, or holds `pair`'s prefill
    /// against the kept one: the reference rows for this pair's positions with the metrics.
    fn yardstick_of(
        &self,
        pair: &PairSpec,
        pre: Option<&RunOutput>,
    ) -> Option<(candle_core::Tensor, crate::compare::Metrics)> {
        let out = pre?;
        let key = SharedPrefill::key(pair);
        if pair.load_key() == self.plan.reference {
            if self.plan_needs_yardsticks {
                self.keep_yardstick(key, out.logits.clone());
            }
            return None;
        }
        let reference = self.yardstick(&key)?;
        // A prefill of the compared positions only is held against those rows.
        let rows = match &pair.positions {
            Some(at) if out.positions != pair.span => {
                run::select_rows(&reference, out.span_start, at).unwrap_or(reference.clone())
            }
            _ => reference.clone(),
        };
        let limit = self
            .cfg
            .limits(pair.dtype, pair.weights, pair.equivalence())
            .max_abs_diff();
        let m = crate::compare::compare_tensors(&rows, &out.logits, out.span_start, limit).ok()?;
        Some((reference, m))
    }

    /// The reference's span rows for `pair`: the own decoder's kept prefill (none for the
    /// reference setting itself, whose decode against it is the pair), or transformers'.
    /// `None` when there is nothing to hold the pair to.
    fn reference_rows(
        &self,
        pair: &PairSpec,
        input: &PairInput,
        own: Option<candle_core::Tensor>,
    ) -> Option<Result<candle_core::Tensor, crate::store::NotCompared>> {
        if self.reference.is_own() {
            return own.map(Ok);
        }
        let key = SharedPrefill::key(pair);
        Some(
            self.reference
                .transformers_rows(&key, input.ids, input.prompt_len),
        )
    }

    fn send(&self, m: WorkerMsg) -> bool {
        self.tx.send(m).is_ok()
    }

    fn yardstick(&self, key: &str) -> Option<candle_core::Tensor> {
        let kept = self.yardsticks.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(key).cloned()
    }

    fn keep_yardstick(&self, key: String, logits: candle_core::Tensor) {
        let mut kept = self.yardsticks.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(key, logits);
    }

    /// The group's pairs of the work, in plan order.
    fn group_order(&self, todo: &[usize], key: LoadKey) -> Vec<usize> {
        todo.iter()
            .copied()
            .filter(|i| self.plan.pairs[*i].load_key() == key)
            .collect()
    }

    /// The lanes for `units` independent computations on a group's model. A deterministic
    /// interrupt (`stop_after_runs`) runs one lane, so that the runs it lets start are always
    /// the same ones.
    fn lanes_for(&self, key: LoadKey, units: usize) -> Lanes {
        let requested = match self.stop_after_runs {
            Some(_) => Some(1),
            None => self.lanes,
        };
        super::lanes::group_lanes(
            &self.info,
            key,
            self.device.device.is_cpu(),
            self.threads,
            units,
            requested,
        )
    }

    /// Announces a run; false when the worker must stop instead (a stop was requested, the
    /// run budget is spent, or the writer is gone).
    fn start_run(&self, id: String) -> bool {
        let started = self.runs_started.load(Ordering::SeqCst);
        if self.stop_after_runs.is_some_and(|n| started >= n) {
            self.stop.request();
        }
        if self.stop.requested() || !self.send(WorkerMsg::Started(id)) {
            return false;
        }
        self.runs_started.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn load(&self, key: LoadKey, purpose: &str, lanes: Lanes) -> Loaded {
        let t = Instant::now();
        let m = self
            .info
            .load_under_test(key.engine, key.weights, key.dtype, &self.device.device)
            .map_err(|e| e.to_string())?;
        self.send(WorkerMsg::Loaded(ModelLoad {
            dtype: key.dtype,
            engine: key.engine,
            weights: key.weights,
            implementation: m.implementation(),
            device: self.device.id.clone(),
            load_s: t.elapsed().as_secs_f64(),
            purpose: purpose.into(),
            lanes: lanes.count,
            threads_per_lane: lanes.threads_each,
        }));
        Ok(m)
    }

    /// Token ids per (prompt, seed) that an earlier session fixed, and those still to make
    /// (with the longest span they must cover): generated once at the plan's longest span,
    /// shared by every dtype, kv_aligned value and shorter span.
    #[allow(clippy::type_complexity)]
    fn tokens_to_fix(
        &self,
        todo: &[&PairSpec],
        known_tokens: &BTreeMap<String, SequenceRecord>,
    ) -> (Sequences, Vec<((String, u64), usize)>) {
        let mut known = HashMap::new();
        let mut to_generate = Vec::new();
        for ((prompt_id, seed), len) in self.plan.continuation_lengths() {
            if !todo.iter().any(|p| p.prompt == prompt_id && p.seed == seed) {
                continue;
            }
            match known_tokens.get(&token_key(&prompt_id, seed)) {
                Some(k) if k.continuation.len() >= len => {
                    known.insert((prompt_id, seed), Ok(k.clone()));
                }
                _ => to_generate.push(((prompt_id, seed), len)),
            }
        }
        (known, to_generate)
    }

    /// Generates the missing token ids (on the f32 reference model for sampled and greedy
    /// continuations) and sends every fixed sequence to the writer; `None` on a stop.
    fn fix_tokens(
        &self,
        mut seqs: Sequences,
        to_generate: Vec<((String, u64), usize)>,
        reference: Option<&Loaded>,
    ) -> Option<Sequences> {
        let mode = self.cfg.config.continuation;
        // Each sequence is its own computation on the shared model: they run on lanes as
        // pairs do, chosen for the reference model's group.
        let lanes = match reference {
            Some(Ok(_)) => self.lanes_for(LoadKey::REFERENCE, to_generate.len()),
            _ => lanes::Lanes {
                count: 1,
                threads_each: self.threads,
            },
        };
        let made = Mutex::new(Vec::new());
        let finished = lanes::run(lanes, to_generate, |((prompt_id, seed), len)| {
            if self.stop.requested() {
                return false;
            }
            let prompt = tokens::prompt_ids(&self.info, &self.plan.prompts[&prompt_id], seed);
            let result = match reference {
                Some(Err(e)) => Err(format!("the f32 reference model could not load: {e}")),
                r => tokens::continuation(
                    &self.info,
                    r.and_then(|r| r.as_ref().ok()).map(|m| m.as_ref()),
                    &prompt_id,
                    &prompt,
                    len,
                    mode,
                    seed,
                )
                .map(|continuation| SequenceRecord {
                    prompt,
                    continuation,
                })
                .map_err(|e| e.to_string()),
            };
            let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
            made.push(((prompt_id, seed), result));
            true
        });
        if !finished {
            return None;
        }
        seqs.extend(made.into_inner().unwrap_or_else(|e| e.into_inner()));
        let records = seqs
            .iter()
            .filter_map(|((p, s), r)| r.as_ref().ok().map(|r| (token_key(p, *s), r.clone())))
            .collect();
        self.send(WorkerMsg::Tokens(records)).then_some(seqs)
    }

    /// Runs one group's units of work on its model, on `lanes`; false when the worker must
    /// stop.
    fn run_group(
        &self,
        model: &Loaded,
        units: &[Vec<usize>],
        lanes: Lanes,
        seqs: &Sequences,
    ) -> bool {
        // Several lanes take the pairs one by one, sharing prefills through a board (a long
        // unit would otherwise run alone on one lane). Traced sweeps keep whole units: their
        // sharing depends on which pairs are traced.
        if lanes.count > 1 && self.cfg.config.trace.is_none() {
            let (board, items) = PrefillBoard::split(units, &self.plan.pairs);
            return lanes::run(lanes, items, |(idx, role)| {
                self.run_unit(model, &[idx], seqs, Some((&board, role)))
            });
        }
        lanes::run(lanes, units.iter().collect(), |unit| {
            self.run_unit(model, unit, seqs, None)
        })
    }

    /// Runs the pairs of one unit in order; false when the worker must stop. With a board,
    /// the unit is one pair and takes or posts its prefill there as its role says.
    fn run_unit(
        &self,
        model: &Loaded,
        order: &[usize],
        seqs: &Sequences,
        board: Option<(&PrefillBoard, BoardRole)>,
    ) -> bool {
        let trace_cfg = self.cfg.config.trace.clone();
        let trace_on = trace_cfg.as_ref().map(|t| t.on);
        let mut shared = SharedPrefill::default();
        for (k, &idx) in order.iter().enumerate() {
            let pair = self.plan.pairs[idx].clone();
            let twin_next = order
                .get(k + 1)
                .is_some_and(|j| SharedPrefill::same(&self.plan.pairs[*j], &pair));
            // A consumer takes its unit's prefill whether or not it can use it, so that the
            // board frees it after the last one; a producer always posts (the guard posts
            // "none" on every early return).
            let mut posted = match board {
                Some((b, BoardRole::Consume)) => {
                    shared.keep_taken(b.take(&pair), &pair);
                    None
                }
                Some((b, BoardRole::Produce)) => Some(PostGuard::new(b, &pair)),
                _ => None,
            };
            let inputs = match (model, &seqs[&(pair.prompt.clone(), pair.seed)]) {
                (Err(e), _) => Err(format!("the model could not load in {}: {e}", pair.dtype)),
                (_, Err(e)) => Err(format!("no tokens for this prompt and seed: {e}")),
                (Ok(m), Ok(seq)) => {
                    let mut ids = seq.prompt.clone();
                    ids.extend_from_slice(&seq.continuation[..pair.span]);
                    let others = tokens::companions(
                        &self.info,
                        &pair.prompt,
                        pair.seed,
                        ids.len(),
                        pair.path.batch() - 1,
                    );
                    Ok((m.as_ref(), ids, seq.prompt.len(), others))
                }
            };
            let selection = trace_cfg
                .as_ref()
                .map(|t| self.plan.trace_selection(t, &pair));
            let trace_now = selection
                .as_ref()
                .filter(|_| trace_on == Some(TraceOn::Always));
            let judged = match &inputs {
                Err(e) => self.fail_pair(idx, &pair, e),
                Ok((m, ids, p, others)) => {
                    let input = PairInput {
                        ids,
                        prompt_len: *p,
                        others,
                    };
                    // Traced prefills are never shared: their records belong to one pair.
                    let reused = if trace_now.is_none() {
                        shared.take_for(&pair)
                    } else {
                        None
                    };
                    // Keep this pair's prefill only when the next pair is its twin (or, on
                    // the board, another lane's pair).
                    let share = (twin_next || posted.is_some()).then_some(&mut shared);
                    self.compute_pair(idx, &pair, *m, input, trace_now, share, reused)
                }
            };
            if let Some(guard) = posted.take() {
                guard.post(shared.take_for(&pair));
            }
            let Some(judged) = judged else {
                return false;
            };
            let failed = judged.verdict.is_fail();
            if !self.send(WorkerMsg::Pair(Box::new(judged))) {
                return false;
            }
            // `on: failing`: a failed pair's runs again, traced.
            if let (Some(TraceOn::Failing), true, Ok((m, ids, p, others)), Some(sel)) =
                (trace_on, failed, &inputs, &selection)
            {
                let input = PairInput {
                    ids,
                    prompt_len: *p,
                    others,
                };
                if !self.trace_again(&pair, *m, input, sel) {
                    return false;
                }
            }
        }
        true
    }

    /// A pair whose inputs could not be made: both runs fail with that reason, and the pair
    /// is INCOMPLETE with it. `None` when the worker must stop.
    fn fail_pair(&self, idx: usize, pair: &PairSpec, e: &str) -> Option<PairRecord> {
        for mode in [Mode::Prefill, Mode::Decode] {
            if !self.start_run(pair.run_id(mode)) {
                return None;
            }
            let msg = WorkerMsg::Run {
                pair: idx,
                mode,
                result: Err(e.to_string()),
                reused_from: None,
            };
            if !self.send(msg) {
                return None;
            }
        }
        let errors = vec![
            format!("prefill failed: {e}"),
            format!("decode failed: {e}"),
        ];
        let limits = self
            .cfg
            .limits(pair.dtype, pair.weights, pair.equivalence());
        Some(super::pair::judge(pair.clone(), None, None, errors, limits))
    }

    /// Runs and judges one pair, sends its run records (and its trace, when traced during
    /// the runs). `reused` is the twin's prefill when there is one; `share`, when given,
    /// receives this pair's prefill for the twin that follows. `None` when the worker must
    /// stop.
    #[allow(clippy::too_many_arguments)]
    fn compute_pair(
        &self,
        idx: usize,
        pair: &PairSpec,
        model: &dyn ModelUnderTest,
        input: PairInput,
        trace_now: Option<&TraceSelection>,
        share: Option<&mut SharedPrefill>,
        reused: Option<(String, RunOutput)>,
    ) -> Option<PairRecord> {
        let reused_from = reused.as_ref().map(|(from, _)| from.clone());
        let inst = Instruments {
            trace: trace_now,
            fault: self.cfg.injection(),
        };
        let limits = self
            .cfg
            .limits(pair.dtype, pair.weights, pair.equivalence());
        let mut starting = |mode: Mode| self.start_run(pair.run_id(mode));
        let done = run_pair(
            model,
            input,
            pair,
            inst,
            limits,
            reused.map(|(_, out)| out),
            &mut starting,
        )?;
        let [(_, pre), (_, dec)] = done.runs;
        let mut record = done.record;
        let yardstick = self.yardstick_of(pair, pre.as_ref().ok());
        record.yardstick = yardstick.as_ref().map(|(_, m)| Yardstick::of(m));
        let reference = self.reference_rows(pair, &input, yardstick.map(|(r, _)| r));
        if let Some(reference) = reference {
            let against = super::reference::Against {
                pair,
                prefill: pre.as_ref().ok(),
                decode: dec.as_ref().ok(),
                limits: self.cfg.reference_limits(pair.dtype, pair.weights),
                window: self.info.family.sliding_window(),
            };
            let label = &self.reference.label;
            let check = match reference {
                Ok(rows) => against.check(label, &rows),
                Err(why) => against.not_compared(label, why),
            };
            super::pair::hold_to_reference(&mut record, check);
        }
        // A reused prefill passes on to the next pair of the same computation under the id
        // of the run that made it.
        let mut share = share.filter(|_| trace_now.is_none());
        let mut records = Vec::new();
        for (mode, result) in [(Mode::Prefill, pre), (Mode::Decode, dec)] {
            let result = result.and_then(|mut out| {
                records.push(std::mem::take(&mut out.trace));
                let rec = RunDone::new(&out, self.cfg.config.keep_logits)?;
                if mode == Mode::Prefill
                    && let Some(shared) = share.take()
                {
                    let from = reused_from.clone().unwrap_or_else(|| pair.run_id(mode));
                    shared.keep(pair, from, out);
                }
                Ok(rec)
            });
            // The writer records the failure's text.
            let result = result.map_err(|e| e.to_string());
            let msg = WorkerMsg::Run {
                pair: idx,
                mode,
                result,
                reused_from: reused_from.clone().filter(|_| mode == Mode::Prefill),
            };
            if !self.send(msg) {
                return None;
            }
        }
        if trace_now.is_some() && records.len() == 2 {
            let dec = records.pop().unwrap_or_default();
            let pre = records.pop().unwrap_or_default();
            let file = self.analyse(pair, input.ids, model.num_layers(), Ok((pre, dec)));
            if !self.send(WorkerMsg::Trace(Box::new(file))) {
                return None;
            }
        }
        Some(record)
    }

    /// `trace: {on: failing}`: a failed pair's two runs again, traced; false when the worker
    /// must stop.
    fn trace_again(
        &self,
        pair: &PairSpec,
        model: &dyn ModelUnderTest,
        input: PairInput,
        sel: &TraceSelection,
    ) -> bool {
        if !self.start_run(format!("{} (traced re-run)", pair.id)) {
            return false;
        }
        let inst = Instruments {
            trace: Some(sel),
            fault: self.cfg.injection(),
        };
        let (ids, p) = (input.ids, input.prompt_len);
        let pre = run::prefill(model, ids, p, Some(sel));
        let dec = run::under_test(
            model,
            ids,
            p,
            pair.kv_aligned,
            pair.path,
            input.others,
            inst,
            None,
        );
        let result = match (pre, dec) {
            (Ok(a), Ok(b)) => Ok((a.trace, b.trace)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        let file = self.analyse(pair, ids, model.num_layers(), result);
        self.send(WorkerMsg::Trace(Box::new(file)))
    }

    /// A pair's trace records compared position by position (or why there are none).
    fn analyse(
        &self,
        pair: &PairSpec,
        ids: &[u32],
        n_layers: usize,
        result: Result<(Vec<trace::TraceRecord>, Vec<trace::TraceRecord>), String>,
    ) -> TraceFile {
        match result {
            Ok((pre, dec)) => TraceFile {
                pair_id: pair.id.clone(),
                error: None,
                trace: Some(
                    trace::analyze(
                        &pair.id,
                        &pair.prompt,
                        pair.dtype,
                        &pre,
                        &dec,
                        ids,
                        self.cfg.nmse_threshold(pair.dtype),
                    )
                    .with_layer_count(n_layers),
                ),
            },
            Err(e) => TraceFile {
                pair_id: pair.id.clone(),
                error: Some(e),
                trace: None,
            },
        }
    }
}

/// A group's pairs cut into units of work: every pair of one (prompt, span, seed) (kv_aligned
/// false and true, every path) reuses the first one's prefill. One lane takes units whole, so
/// the prefill is still the last one made; several lanes take the pairs one by one and share
/// the prefill through a [`PrefillBoard`]. Either way no prefill logits are held beyond their
/// unit's last pair.
fn units(plan: &Plan, mut order: Vec<usize>) -> Vec<Vec<usize>> {
    order.sort_by_key(|i| {
        let p = &plan.pairs[*i];
        (p.prompt.clone(), p.span, p.seed, p.kv_aligned, p.path)
    });
    let mut units: Vec<Vec<usize>> = Vec::new();
    for idx in order {
        match units.last_mut() {
            Some(u) if SharedPrefill::same(&plan.pairs[u[0]], &plan.pairs[idx]) => u.push(idx),
            _ => units.push(vec![idx]),
        }
    }
    units
}

/// Orders units for several lanes, the most tokens first (stable, so ties keep plan order):
/// in plan order the longest spans come last, and the last of them ran alone on one lane
/// while the others had nothing left (the built-in B3.70 sweep spent a quarter of its wall
/// time on one core). Longest first, the lanes finish within about one short unit of each
/// other. The order changes only when each unit runs, never what it computes.
fn longest_first(plan: &Plan, units: &mut [Vec<usize>]) {
    units.sort_by_key(|u| std::cmp::Reverse(u.iter().map(|i| plan.pairs[*i].span).sum::<usize>()));
}
