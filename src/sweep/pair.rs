//! One pair, start to verdict: its prefill and decode runs on a model under test, compared
//! where the logits are and judged. The sweep's device worker and `verify` both run pairs
//! through [`run_pair`], so a re-run is the same computation as the run it checks.

use crate::compare::{self, Metrics};
use crate::config::FirstDivergence;
use crate::error::Error;
use crate::limits::Thresholds;
use crate::model::ModelUnderTest;
use crate::plan::{Mode, PairSpec};
use crate::run::{self, Instruments, RunOutput};
use crate::store::PairRecord;
use crate::verdict::{self, PairVerdict};

/// The token ids a pair's runs consume.
#[derive(Debug, Clone, Copy)]
pub struct PairInput<'a> {
    /// Prompt followed by the first `span` continuation ids.
    pub ids: &'a [u32],
    /// Prompt length P (the span starts there).
    pub prompt_len: usize,
    /// The other sequences of a batched path's batch (B − 1 of them, each as long as
    /// `ids`; [`crate::tokens::companions`]); empty for the other paths.
    pub others: &'a [Vec<u32>],
}

/// What running a pair produced: each run's output (or why it failed) and the judged record.
#[derive(Debug)]
pub struct PairRun {
    /// Prefill and decode, in that order.
    pub runs: [(Mode, Result<RunOutput, Error>); 2],
    /// The compared and judged pair.
    pub record: PairRecord,
}

/// Runs `pair` on `model` and judges it. `prefill` is a prefill of the same computation made
/// for another pair (its kv_aligned twin), used instead of running one. `starting` is called
/// before each run computes; returning false stops before it (the pair is then not
/// recorded: `None`). The logits stay on the model's device.
pub fn run_pair(
    model: &dyn ModelUnderTest,
    input: PairInput,
    pair: &PairSpec,
    inst: Instruments,
    limits: Thresholds,
    prefill: Option<RunOutput>,
    starting: &mut dyn FnMut(Mode) -> bool,
) -> Option<PairRun> {
    if !starting(Mode::Prefill) {
        return None;
    }
    let pre = match prefill {
        Some(out) => Ok(out),
        None => match &pair.positions {
            Some(at) => run::prefill_at(model, input.ids, input.prompt_len, at, inst.trace),
            None => run::prefill(model, input.ids, input.prompt_len, inst.trace),
        },
    };
    if !starting(Mode::Decode) {
        return None;
    }
    let dec = run::under_test(
        model,
        input.ids,
        input.prompt_len,
        pair.kv_aligned,
        pair.path,
        input.others,
        inst,
        pre.as_ref().ok().and_then(|p| p.kept.as_ref()),
    );
    let errors: Vec<String> = [(Mode::Prefill, &pre), (Mode::Decode, &dec)]
        .into_iter()
        .filter_map(|(mode, r)| r.as_ref().err().map(|e| format!("{mode} failed: {e}")))
        .collect();
    let mut record = judge(
        pair.clone(),
        pre.as_ref().ok(),
        dec.as_ref().ok(),
        errors,
        limits,
    );
    if let (Ok(p), Ok(d)) = (&pre, &dec) {
        search(model, input, pair, (p, d), &mut record);
    }
    Some(PairRun {
        runs: [(Mode::Prefill, pre), (Mode::Decode, dec)],
        record,
    })
}

/// `first_divergence: search`: makes the record's first divergent position exact by
/// bisection after the compared positions (docs/design.md, "Compared positions"), and records
/// what it took. The verdict stays the compared positions' one. A search that fails leaves
/// the compared positions' answer and says so in the reason.
fn search(
    model: &dyn ModelUnderTest,
    input: PairInput,
    pair: &PairSpec,
    (pre, dec): (&RunOutput, &RunOutput),
    record: &mut PairRecord,
) {
    let (FirstDivergence::Search, Some(m)) = (pair.first_divergence, record.metrics.as_mut())
    else {
        return;
    };
    let every: Vec<usize>;
    let at = match &pair.positions {
        Some(at) => at.as_slice(),
        None => {
            every = (input.prompt_len..input.prompt_len + pair.span).collect();
            &every
        }
    };
    let s = run::SearchInput {
        model,
        tokens: input.ids,
        prefill: pre,
        decode: dec,
        at,
        limit: record.limits.max_abs_diff(),
    };
    match run::search_first_divergence(&s, m.first_divergent_pos) {
        Ok(found) => {
            m.first_divergent_pos = found.first_divergent_pos;
            record.divergence_search = Some(found);
        }
        Err(e) => record.reason = format!("{}; the divergence search failed: {e}", record.reason),
    }
}

/// The metrics of rows compared at positions `at` (row i at `at[i]`), their positions made
/// absolute.
pub(super) fn at_positions(mut m: Metrics, at: &[usize]) -> Metrics {
    let abs = |i: usize| at.get(i).copied().unwrap_or(i);
    m.first_divergent_pos = m.first_divergent_pos.map(abs);
    if let Some(f) = m.first_top1_flip.as_mut() {
        f.pos = abs(f.pos);
    }
    for f in &mut m.top1_flips {
        f.pos = abs(f.pos);
    }
    m
}

/// Compares a pair's runs and gives its verdict: over every span position, or over the
/// pair's compared positions ([`PairSpec::positions`]).
pub fn judge(
    spec: PairSpec,
    pre: Option<&RunOutput>,
    dec: Option<&RunOutput>,
    errors: Vec<String>,
    limits: Thresholds,
) -> PairRecord {
    let incomplete = |reason: String| PairRecord {
        spec: spec.clone(),
        verdict: PairVerdict::Incomplete,
        reason,
        metrics: None,
        limits,
        yardstick: None,
        divergence_search: None,
        reference: None,
    };
    let (pre, dec) = match (pre, dec) {
        (Some(p), Some(d)) => (p, d),
        _ => return incomplete(errors.join("; ")),
    };
    if pre.span_start != dec.span_start {
        return incomplete(format!(
            "the runs start their spans at different positions (prefill {}, decode {})",
            pre.span_start, dec.span_start
        ));
    }
    let (pl, dl, start) = match &spec.positions {
        None => (pre.logits.clone(), dec.logits.clone(), pre.span_start),
        // Row i of the selection is position at[i]: compared from 0, then made absolute.
        Some(at) => match (
            run::rows_at(pre, spec.span, at),
            run::rows_at(dec, spec.span, at),
        ) {
            (Ok(p), Ok(d)) => (p, d, 0),
            (Err(e), _) | (_, Err(e)) => return incomplete(e.to_string()),
        },
    };
    match compare::compare_tensors(&pl, &dl, start, limits.max_abs_diff()) {
        Ok(m) => {
            let m = match &spec.positions {
                Some(at) => at_positions(m, at),
                None => m,
            };
            let (verdict, reason) =
                verdict::judge_pair(&m, spec.dtype, spec.equivalence(), &limits);
            PairRecord {
                spec,
                verdict,
                reason,
                metrics: Some(m),
                limits,
                yardstick: None,
                divergence_search: None,
                reference: None,
            }
        }
        Err(e) => incomplete(e.to_string()),
    }
}

/// Adds `check` to `record` and lets it enter the pair's verdict
/// ([`crate::store::ReferenceCheck::enter`]).
pub(super) fn hold_to_reference(record: &mut PairRecord, check: crate::store::ReferenceCheck) {
    let (verdict, reason) = check.enter(record.verdict, &record.reason);
    record.verdict = verdict;
    record.reason = reason;
    record.reference = Some(check);
}

/// The key under which a (prompt, seed)'s token ids are stored in the manifest.
pub fn token_key(prompt: &str, seed: u64) -> String {
    format!("{prompt}/seed{seed}")
}

/// The one prefill kept for reuse: every pair of one (prompt, span, seed) (kv_aligned true
/// and false, every path) runs the same prefill, so the worker runs them one after the other
/// and each takes the output of the one before (moved, not copied: the last one drops it).
#[derive(Debug, Default)]
pub(super) struct SharedPrefill {
    kept: Option<(String, String, RunOutput)>,
}

impl SharedPrefill {
    /// What makes two prefills the same computation: everything but kv_aligned and the path
    /// (the dtype and model are those of the group being run).
    pub(super) fn key(pair: &PairSpec) -> String {
        format!("{}/s{}/seed{}", pair.prompt, pair.span, pair.seed)
    }

    /// Whether `a` and `b` run the same prefill.
    pub(super) fn same(a: &PairSpec, b: &PairSpec) -> bool {
        Self::key(a) == Self::key(b)
    }

    /// The kept prefill if it is `pair`'s, with the id of the run that computed it. Anything
    /// else kept is dropped: it had its one chance.
    pub(super) fn take_for(&mut self, pair: &PairSpec) -> Option<(String, RunOutput)> {
        self.kept
            .take()
            .filter(|(key, _, _)| *key == Self::key(pair))
            .map(|(_, from, out)| (from, out))
    }

    /// Keeps a prefill taken from a [`PrefillBoard`] (with the id of the run that computed
    /// it) for the pair that took it.
    pub(super) fn keep_taken(&mut self, taken: Option<(String, RunOutput)>, pair: &PairSpec) {
        self.kept = taken.map(|(from, out)| (Self::key(pair), from, out));
    }

    /// Keeps `pair`'s prefill (computed by run `run_id`) for its twin.
    pub(super) fn keep(&mut self, pair: &PairSpec, run_id: String, out: RunOutput) {
        self.kept = Some((Self::key(pair), run_id, out));
    }
}

/// Prefills shared across lanes. With several lanes, a group's units (the pairs of one prefill
/// computation) are taken pair by pair, so that a unit of long spans does not run alone on one
/// lane while the others idle (SmolLM2's race: a span-128 unit took three times a span-32
/// one, and a dtype's wall time was its longest unit). The first pair of each unit computes
/// the prefill and posts it here; the unit's later pairs, on any lane, wait for it and use it
/// as a pair on one lane would. Lanes take pairs in queue order, so a producer has always been
/// taken before its consumers, and a producer never waits: no lane waits forever.
#[derive(Default)]
pub(super) struct PrefillBoard {
    slots: std::sync::Mutex<std::collections::HashMap<String, Slot>>,
    posted: std::sync::Condvar,
}

/// One unit's prefill on the board, until its last consumer has taken it.
struct Slot {
    /// Consumers that have not taken it yet.
    consumers: usize,
    post: Post,
}

enum Post {
    /// The producer has not posted yet.
    Pending,
    /// The prefill, with the id of the run that computed it.
    Ready(String, RunOutput),
    /// The producer made no prefill to share (it failed, or the worker stopped).
    Gone,
}

/// What a pair does with the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BoardRole {
    /// Its prefill is no other pair's.
    Alone,
    /// It computes the prefill of its unit and posts it.
    Produce,
    /// It waits for its unit's prefill.
    Consume,
}

impl PrefillBoard {
    /// The board for `units` (each unit's pairs share one prefill computation, first pair
    /// first) and the pairs to run, in the units' order, each with its role.
    pub(super) fn split(
        units: &[Vec<usize>],
        plan: &[PairSpec],
    ) -> (Self, Vec<(usize, BoardRole)>) {
        let board = PrefillBoard::default();
        let mut items = Vec::new();
        {
            let mut slots = board.lock();
            for unit in units {
                let Some((&first, rest)) = unit.split_first() else {
                    continue;
                };
                if rest.is_empty() {
                    items.push((first, BoardRole::Alone));
                    continue;
                }
                let consumers = rest.len();
                let slot = Slot {
                    consumers,
                    post: Post::Pending,
                };
                slots.insert(SharedPrefill::key(&plan[first]), slot);
                items.push((first, BoardRole::Produce));
                items.extend(rest.iter().map(|&i| (i, BoardRole::Consume)));
            }
        }
        (board, items)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts the prefill of `pair`'s unit (with the id of the run that computed it), or that
    /// there is none, and wakes the waiting consumers.
    pub(super) fn post(&self, pair: &PairSpec, prefill: Option<(String, RunOutput)>) {
        let key = SharedPrefill::key(pair);
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&key)
            && matches!(slot.post, Post::Pending)
        {
            slot.post = match prefill {
                Some((from, out)) => Post::Ready(from, out),
                None => Post::Gone,
            };
        }
        drop(slots);
        self.posted.notify_all();
    }

    /// The prefill of `pair`'s unit, once its producer has posted it; `None` when there is
    /// none (the pair then computes its own). The last consumer's take frees it.
    pub(super) fn take(&self, pair: &PairSpec) -> Option<(String, RunOutput)> {
        let key = SharedPrefill::key(pair);
        let pending = |slots: &mut std::collections::HashMap<String, Slot>| {
            slots
                .get(&key)
                .is_some_and(|s| matches!(s.post, Post::Pending))
        };
        let mut slots = self
            .posted
            .wait_while(self.lock(), pending)
            .unwrap_or_else(|e| e.into_inner());
        let slot = slots.get_mut(&key)?;
        let shared = match &slot.post {
            Post::Ready(from, out) => Some((from.clone(), out.clone())),
            _ => None,
        };
        slot.consumers -= 1;
        if slot.consumers == 0 {
            slots.remove(&key);
        }
        shared
    }
}

/// Posts "no prefill" for a producer that did not post (it stopped early, or its lane
/// panicked), so that its consumers never wait for it.
pub(super) struct PostGuard<'a> {
    board: &'a PrefillBoard,
    pair: &'a PairSpec,
    posted: bool,
}

impl<'a> PostGuard<'a> {
    pub(super) fn new(board: &'a PrefillBoard, pair: &'a PairSpec) -> Self {
        PostGuard {
            board,
            pair,
            posted: false,
        }
    }

    /// Posts the producer's prefill (or that there is none).
    pub(super) fn post(mut self, prefill: Option<(String, RunOutput)>) {
        self.board.post(self.pair, prefill);
        self.posted = true;
    }
}

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        if !self.posted {
            self.board.post(self.pair, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::RunDtype;
    use candle_core::{Device, Tensor};

    fn spec(kv: bool) -> PairSpec {
        PairSpec::new("p", 2, RunDtype::F32, kv, 0)
    }

    fn board_of(
        units: &[Vec<usize>],
        pairs: &[PairSpec],
    ) -> (PrefillBoard, Vec<(usize, BoardRole)>) {
        PrefillBoard::split(units, pairs)
    }

    #[test]
    fn board_roles_follow_the_units() {
        let pairs = vec![
            spec(false),
            spec(true),
            PairSpec::new("q", 2, RunDtype::F32, false, 0),
        ];
        let (_, items) = board_of(&[vec![0, 1], vec![2]], &pairs);
        assert_eq!(
            items,
            vec![
                (0, BoardRole::Produce),
                (1, BoardRole::Consume),
                (2, BoardRole::Alone)
            ]
        );
    }

    #[test]
    fn consumers_on_other_threads_wait_for_the_posted_prefill() {
        let pairs = vec![spec(false), spec(true), spec(true)];
        let (board, _) = board_of(&[vec![0, 1, 2]], &pairs);
        std::thread::scope(|s| {
            let (b, p) = (&board, &pairs);
            // The consumers block until the producer posts (or find it posted: the outcome
            // is the same whichever comes first).
            let waiting: Vec<_> = (1..3)
                .map(|i| s.spawn(move || b.take(&p[i]).map(|(from, o)| (from, o.span_start))))
                .collect();
            board.post(&pairs[0], Some(("run-0".into(), out(7, vec![0.0; 4]))));
            for w in waiting {
                assert_eq!(w.join().unwrap(), Some(("run-0".to_string(), 7)));
            }
        });
        // The last consumer freed the slot.
        assert!(board.lock().is_empty());
    }

    #[test]
    fn a_producer_that_stops_posts_none() {
        let pairs = vec![spec(false), spec(true)];
        let (board, _) = board_of(&[vec![0, 1]], &pairs);
        drop(PostGuard::new(&board, &pairs[0]));
        assert!(board.take(&pairs[1]).is_none());
        assert!(board.lock().is_empty());
        // A posted guard posts once, what it was given.
        let (board, _) = board_of(&[vec![0, 1]], &pairs);
        PostGuard::new(&board, &pairs[0]).post(Some(("r".into(), out(1, vec![0.0; 2]))));
        assert_eq!(board.take(&pairs[1]).map(|(f, _)| f), Some("r".to_string()));
    }

    fn out(start: usize, logits: Vec<f32>) -> RunOutput {
        let positions = logits.len() / 2;
        RunOutput {
            vocab: 2,
            span_start: start,
            positions,
            forwards: 1,
            tokens_fed: start + 2,
            wall_s: 0.1,
            logits: Tensor::from_vec(logits, (positions, 2), &Device::Cpu).unwrap(),
            trace: vec![],
            kept: None,
        }
    }

    #[test]
    fn a_failed_run_makes_the_pair_incomplete_with_its_error() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let pre = out(3, vec![0.0; 4]);
        let r = judge(
            spec(true),
            Some(&pre),
            None,
            vec!["decode failed: boom".into()],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        assert!(r.reason.contains("boom"));
    }

    #[test]
    fn runs_over_different_positions_are_incomplete() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let (a, b, c) = (
            out(3, vec![0.0; 4]),
            out(4, vec![0.0; 4]),
            out(3, vec![0.0; 6]),
        );
        let r = judge(spec(true), Some(&a), Some(&b), vec![], limits);
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        let r = judge(spec(true), Some(&a), Some(&c), vec![], limits);
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        assert!(r.reason.contains("different positions"), "{}", r.reason);
    }

    #[test]
    fn compared_pairs_get_mode_specific_verdicts() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let a = out(3, vec![1.0, 2.0, 3.0, 4.0]);
        let r = judge(spec(true), Some(&a), Some(&a), vec![], limits);
        assert_eq!(r.verdict, PairVerdict::PassEquiv);
        let b = out(3, vec![1.0, f32::NAN, 3.0, 4.0]);
        let r = judge(spec(false), Some(&a), Some(&b), vec![], limits);
        assert_eq!(r.verdict, PairVerdict::FailDrift);
    }

    #[test]
    fn a_kept_prefill_goes_only_to_its_twin_and_only_once() {
        let mut shared = SharedPrefill::default();
        shared.keep(&spec(false), "run-a".into(), out(3, vec![0.0; 4]));
        let mut other = spec(true);
        other.seed = 1;
        assert!(shared.take_for(&other).is_none(), "another seed's prefill");
        assert!(
            shared.take_for(&spec(true)).is_none(),
            "dropped by the miss"
        );
        shared.keep(&spec(false), "run-a".into(), out(3, vec![0.0; 4]));
        let (from, _) = shared.take_for(&spec(true)).expect("the twin takes it");
        assert_eq!(from, "run-a");
        assert!(shared.take_for(&spec(true)).is_none(), "taken, not copied");
    }
}
