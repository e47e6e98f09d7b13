//! The paths of one run over a pair's tokens: prefill, stepwise decode, chunked and
//! batched forwards, each with its taps and faults.

use std::time::Instant;

use candle_core::Tensor;

use crate::error::{CandleContext, Error, Result};
use crate::model::{Fault, KeptCache, ModelUnderTest, Probes, Rows, Sequence};
use crate::path::{CacheSource, RunPath};
use crate::trace::{Injection, TraceRecord, TraceSelection, TraceSink};

/// What a run hands to the comparator.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// f32 logits of the span positions, `[span × vocab]`, on the device that computed them:
    /// the comparator reads them there, and they reach the host only when they are kept.
    pub logits: Tensor,
    /// Vocabulary size (row width).
    pub vocab: usize,
    /// Absolute position of the first row (= prompt length).
    pub span_start: usize,
    /// Number of rows.
    pub positions: usize,
    /// Forward passes made.
    pub forwards: usize,
    /// Tokens fed through the model.
    pub tokens_fed: usize,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Trace records, when the run was traced.
    pub trace: Vec<TraceRecord>,
    /// A prefill's cache cut back to the prompt, for the kv_aligned runs of the same tokens
    /// ([`under_test`]'s `kept`); `None` for other runs, traced prefills and models that
    /// cannot keep one.
    pub kept: Option<KeptCache>,
}

impl RunOutput {
    /// The logits in host memory, row-major (a copy, for storing them).
    pub fn host_logits(&self) -> Result<Vec<f32>> {
        self.logits
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .context(|| "copying the logits to the host".into())
    }
}

/// How a run is instrumented: what to trace, and the fault its decode steps carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Instruments<'a> {
    /// Record these tensors and positions.
    pub trace: Option<&'a TraceSelection>,
    /// The fault injected into decode (never into prefill).
    pub fault: Injection,
}

impl Instruments<'_> {
    fn path_fault(&self) -> Fault {
        Fault {
            scale: self.fault.scale,
            position_shift: self.fault.position_shift,
            window_shift: self.fault.window_shift,
            chunk_position_shift: self.fault.chunk_position_shift,
            cross_row_cache: self.fault.cross_row_cache,
        }
    }
}

/// The probes of `seq`, or an error naming what needed them (plans skip such pairs before
/// they reach a run, so this only guards library callers).
fn probes<'s>(seq: &'s mut dyn Sequence, what: &str) -> Result<&'s mut Probes> {
    seq.probes().ok_or_else(|| Error::Candle {
        context: what.into(),
        source: candle_core::Error::Msg("this model has no layer taps or faults".into()),
    })
}

/// Feeds `tokens` and returns the logits of `rows`, which the caller needs: a model that
/// returns none for them is an error with `what` as its context.
fn logits_of(
    seq: &mut dyn Sequence,
    tokens: &[u32],
    rows: Rows,
    what: impl Fn() -> String,
) -> Result<Tensor> {
    seq.forward(tokens, rows)
        .context(&what)?
        .ok_or_else(|| Error::Candle {
            context: what(),
            source: candle_core::Error::Msg("the model returned no logits".into()),
        })
}

/// The records a traced sequence collected.
fn take_trace(seq: &mut dyn Sequence) -> Vec<TraceRecord> {
    seq.probes()
        .and_then(|p| p.trace.take())
        .map(|s| s.records)
        .unwrap_or_default()
}

/// Prefill: one forward over prompt + span at offset 0; keep the span positions' logits.
/// With `trace`, records the selection during that forward. A model that returns only the
/// last row's logits gets one fresh forward per prefix length instead (span forwards).
pub fn prefill(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    trace: Option<&TraceSelection>,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    if span == 0 {
        return Err(Error::Candle {
            context: "prefill".into(),
            source: candle_core::Error::Msg("the span is empty".into()),
        });
    }
    let ctx = || format!("prefill forward over {} tokens", tokens.len());
    if !model.capabilities().every_row {
        // No sequence is held here: each prefix makes its own (some models run one sequence
        // at a time).
        let ends = prompt_len + 1..=tokens.len();
        let (logits, forwards, tokens_fed) = last_rows_by_prefix(model, tokens, ends)?;
        return Ok(RunOutput {
            vocab: model.vocab_size(),
            span_start: prompt_len,
            positions: span,
            forwards,
            tokens_fed,
            wall_s: start.elapsed().as_secs_f64(),
            logits,
            trace: Vec::new(),
            kept: None,
        });
    }
    let mut seq = model.sequence(tokens.len()).context(ctx)?;
    if let Some(sel) = trace {
        probes(seq.as_mut(), "prefill")?.trace = Some(TraceSink::new(sel.clone()));
    }
    let logits = logits_of(seq.as_mut(), tokens, Rows::From(prompt_len), ctx)?;
    // An untraced forward's prompt cache is what a kv_aligned run starts from (a traced one
    // holds the same K/V, but its runs record their own prompt positions).
    let kept = if trace.is_none() && prompt_len > 0 {
        seq.keep(prompt_len)
            .context(|| "prefill: keeping the prompt's cache".into())?
            .map(|state| KeptCache::new(&tokens[..prompt_len], state))
    } else {
        None
    };
    Ok(RunOutput {
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: span,
        forwards: 1,
        tokens_fed: tokens.len(),
        wall_s: start.elapsed().as_secs_f64(),
        logits,
        trace: take_trace(seq.as_mut()),
        kept,
    })
}

/// Prefill logits of a model that returns only the last row: a fresh sequence per prefix
/// `tokens[..end]`, one row per `end` (every span position p's end is p + 1). Quadratic in the
/// span: the plan states the cost in forward tokens.
pub(super) fn last_rows_by_prefix(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    ends: impl IntoIterator<Item = usize>,
) -> Result<(Tensor, usize, usize)> {
    let mut rows = Vec::new();
    let mut fed = 0;
    for end in ends {
        let ctx = || format!("prefill forward over the first {end} tokens");
        let mut seq = model.sequence(end).context(ctx)?;
        let row = logits_of(seq.as_mut(), &tokens[..end], Rows::last(end), ctx)?;
        rows.push(row);
        fed += end;
    }
    let logits = Tensor::cat(&rows, 0).context(|| "joining the prefill rows".into())?;
    Ok((logits, rows.len(), fed))
}

/// Decode: the run under test on [`RunPath::Decode`] (see [`under_test`]).
pub fn decode(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    inst: Instruments,
) -> Result<RunOutput> {
    under_test(
        model,
        tokens,
        prompt_len,
        kv_aligned,
        RunPath::Decode,
        &[],
        inst,
        None,
    )
}

/// The run under test: the span logits of `tokens` computed along `path`.
///
/// - decode: build the prompt's cache as `kv_aligned` says, then one forward per span token at
///   its own offset.
/// - chunked:C: the same cache for kv_aligned = true; then the rest of the sequence (all of it
///   for kv_aligned = false) in chunks of C at the cache's offset, every chunk's rows kept.
/// - batched:B: decode of `tokens` as row 0 of a batch whose other rows are `others` (B − 1
///   sequences of the same length), all fed in lockstep.
/// - batched_prefill:B: one forward over the batch.
///
/// kv_aligned = true: the span must start from the cache prefill computed (docs/design.md,
/// "kv_aligned"), so the run makes prefill's own forward over prompt + span (for a batch, each
/// row's own forward alone, the caches then side by side) and keeps the prompt's K/V
/// ([`CacheSource::CutBack`]). A separate forward over the prompt alone would run the
/// projections at a different matrix height, which on GPU kernels can round differently; it
/// is what a model that cannot cut its cache back gets ([`CacheSource::PromptPrefill`]: the
/// prompt alone in one forward, a batch's prompts in one batched forward), as
/// [`RunPath::cache_source`] says.
///
/// `kept`: the prefill run's cache of this prompt ([`RunOutput::kept`]). A one-sequence path
/// whose cache is prefill's cut-back cache starts from a copy of it rather than computing
/// that forward again (the same bits, [`CacheSource::CutBack`]); a traced run computes it, so
/// that its trace holds the prompt positions.
///
/// With a trace selection, records prompt positions from whichever forward computed them and
/// span positions from the path's forwards. The fault perturbs every forward of the path
/// (never the kv_aligned cache forward, which is prefill's computation).
#[allow(clippy::too_many_arguments)]
pub fn under_test(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    path: RunPath,
    others: &[Vec<u32>],
    inst: Instruments,
    kept: Option<&KeptCache>,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    let bad = |what: &str, msg: String| Error::Candle {
        context: what.into(),
        source: candle_core::Error::Msg(msg),
    };
    if inst.fault.fail_span == Some(span) {
        return Err(bad(
            &format!("{} at span {span}", path.run_name()),
            "injected failure (inject.fail_span)".into(),
        ));
    }
    if others.len() + 1 != path.batch() || others.iter().any(|o| o.len() != tokens.len()) {
        return Err(bad(
            &format!("path {path}"),
            format!(
                "needs {} other sequences of {} tokens, was given {}",
                path.batch() - 1,
                tokens.len(),
                others.len()
            ),
        ));
    }
    let mut rows: Vec<&[u32]> = vec![tokens];
    rows.extend(others.iter().map(Vec::as_slice));
    let caps = model.capabilities();
    let every_row = caps.every_row;
    let source = path.cache_source(kv_aligned, every_row, caps.cache_prefix);
    let start_at = Start {
        prompt_len,
        source,
        kept,
    };
    let fed = match path {
        RunPath::Decode | RunPath::Batched(_) => stepwise(model, &rows, start_at, inst)?,
        RunPath::Chunked(c) if every_row => chunked(model, tokens, start_at, c, inst)?,
        RunPath::Chunked(c) => chunked_by_prefix(model, tokens, prompt_len, source.is_some(), c)?,
        RunPath::BatchedPrefill(_) if every_row => batched_prefill(model, &rows, prompt_len, inst)?,
        RunPath::BatchedPrefill(_) => batched_prefill_by_prefix(model, &rows, prompt_len)?,
    };
    Ok(RunOutput {
        logits: fed.logits,
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: span,
        forwards: fed.forwards,
        tokens_fed: fed.tokens_fed,
        wall_s: start.elapsed().as_secs_f64(),
        trace: fed.trace,
        kept: None,
    })
}

/// What a path's forwards produced: row 0's span logits and the work done.
struct Fed {
    logits: Tensor,
    forwards: usize,
    tokens_fed: usize,
    trace: Vec<TraceRecord>,
}

/// Sets a sequence's trace sink and says whether the path's fault is active (a model without
/// probes never gets here with either: plans refuse that combination).
fn instrument(seq: &mut dyn Sequence, inst: &Instruments, what: &str) -> Result<bool> {
    let faulty = inst.path_fault().is_active();
    if inst.trace.is_some() || faulty {
        probes(seq, what)?.trace = inst.trace.cloned().map(TraceSink::new);
    }
    Ok(faulty)
}

/// The kv_aligned cache: prefill's own forward over every row's whole sequence (each row
/// alone), cut back to the prompt. Traces record the prompt positions from it.
fn prompt_cache(seq: &mut dyn Sequence, all: &[u32], prompt_len: usize, what: &str) -> Result<()> {
    if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
        sink.set_window(0..prompt_len);
    }
    // Only the cache is used: no logits are computed unless the forward is traced.
    seq.forward_each(all)
        .context(|| format!("{what}: prefill forward over {} tokens", all.len()))?;
    if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
        sink.set_window(0..usize::MAX);
    }
    seq.truncate(prompt_len)
        .context(|| format!("{what}: keeping the prompt's {prompt_len} cached positions"))
}

/// The kv_aligned cache of a model that cannot cut its cache back: one forward over the
/// prompt alone (a batch's prompts side by side in one batched forward). Traces record the
/// prompt positions from it.
fn prompt_only(
    seq: &mut dyn Sequence,
    rows: &[&[u32]],
    prompt_len: usize,
    what: &str,
) -> Result<()> {
    if prompt_len == 0 {
        return Ok(());
    }
    let prompts: Vec<u32> = rows
        .iter()
        .flat_map(|r| r[..prompt_len].iter().copied())
        .collect();
    seq.forward(&prompts, Rows::None)
        .map(|_| ())
        .context(|| format!("{what}: prompt-only prefill over {prompt_len} tokens"))
}

/// Builds the kv_aligned prompt cache `source` names on `seq` (nothing for `None`); returns
/// the (forwards, tokens fed) it cost.
fn aligned_cache(
    seq: &mut dyn Sequence,
    rows: &[&[u32]],
    prompt_len: usize,
    source: Option<CacheSource>,
    what: &str,
) -> Result<(usize, usize)> {
    let (b, n) = (rows.len(), rows[0].len());
    match source {
        None => Ok((0, 0)),
        Some(CacheSource::CutBack) => {
            prompt_cache(seq, &rows.concat(), prompt_len, what)?;
            Ok((b, b * n))
        }
        Some(CacheSource::PromptPrefill) => {
            prompt_only(seq, rows, prompt_len, what)?;
            Ok((usize::from(prompt_len > 0), b * prompt_len))
        }
    }
}

/// Where a path's sequence starts: the prompt's length, the kv_aligned cache it starts from
/// (`None`: from position 0), and the prefill run's kept cache, if any.
#[derive(Clone, Copy)]
struct Start<'k> {
    prompt_len: usize,
    source: Option<CacheSource>,
    kept: Option<&'k KeptCache>,
}

/// A path's sequence, ready for the span (see [`started`]).
struct Started<'m> {
    seq: Box<dyn Sequence + 'm>,
    /// Whether the path's fault is active.
    faulty: bool,
    /// The (forwards, tokens fed) its kv_aligned cache cost.
    cost: (usize, usize),
}

/// A path's sequence, instrumented, with its kv_aligned cache: a copy of the prefill run's
/// kept cache where that is the cache `at.source` names (one untraced sequence whose prompt
/// it holds), else a `new` sequence whose cache is computed here.
fn started<'m>(
    model: &'m dyn ModelUnderTest,
    new: impl FnOnce() -> Result<Box<dyn Sequence + 'm>>,
    rows: &[&[u32]],
    at: Start,
    inst: &Instruments,
    what: &str,
) -> Result<Started<'m>> {
    let n = rows[0].len();
    let kept = at.kept.filter(|k| {
        at.source == Some(CacheSource::CutBack)
            && rows.len() == 1
            && inst.trace.is_none()
            && k.tokens() == &rows[0][..at.prompt_len]
    });
    if let Some(kept) = kept {
        let resumed = model
            .resume(kept, n)
            .context(|| format!("{what}: starting from prefill's cache"))?;
        if let Some(mut seq) = resumed {
            let faulty = instrument(seq.as_mut(), inst, what)?;
            return Ok(Started {
                seq,
                faulty,
                cost: (0, 0),
            });
        }
    }
    let mut seq = new()?;
    let faulty = instrument(seq.as_mut(), inst, what)?;
    let cost = aligned_cache(seq.as_mut(), rows, at.prompt_len, at.source, what)?;
    Ok(Started { seq, faulty, cost })
}

/// Decode and batched decode: `rows` (row 0 the sequence of interest) fed one position at a
/// time in lockstep; row 0's span rows kept.
fn stepwise(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    at: Start,
    inst: Instruments,
) -> Result<Fed> {
    let (b, n) = (rows.len(), rows[0].len());
    let (prompt_len, source) = (at.prompt_len, at.source);
    let what = if b == 1 { "decode" } else { "batched decode" };
    let new = || {
        model
            .batch(b, n)
            .context(|| format!("{what}: a new batch of {b}"))
    };
    let Started {
        mut seq,
        faulty,
        cost: (mut forwards, mut tokens_fed),
    } = started(model, new, rows, at, &inst, what)?;
    if faulty {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let column = |pos: usize| -> Vec<u32> { rows.iter().map(|r| r[pos]).collect() };
    if source.is_none() {
        for pos in 0..prompt_len {
            seq.forward(&column(pos), Rows::None)
                .context(|| format!("{what}: prompt token at position {pos}"))?;
            forwards += 1;
        }
        tokens_fed += b * prompt_len;
    }
    // Each step's row stays on the device (no per-step copy to the host, no sync); the rows
    // are joined once at the end.
    let mut out = Vec::with_capacity(n - prompt_len);
    for pos in prompt_len..n {
        let ctx = || format!("{what}: step at position {pos}");
        let step = logits_of(seq.as_mut(), &column(pos), Rows::From(0), ctx)?;
        out.push(step.narrow(0, 0, 1).context(ctx)?);
        forwards += 1;
    }
    tokens_fed += b * (n - prompt_len);
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| format!("joining the {what} steps' logits"))?,
        forwards,
        tokens_fed,
        trace: take_trace(seq.as_mut()),
    })
}

/// Chunked prefill on a model that returns every row: chunks of `c` at the cache's offset,
/// from the prompt's end (kv_aligned, after the cache `source` names) or from position 0.
fn chunked(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    at: Start,
    c: usize,
    inst: Instruments,
) -> Result<Fed> {
    let what = "chunked prefill";
    let n = tokens.len();
    let (prompt_len, source) = (at.prompt_len, at.source);
    let new = || {
        model
            .sequence(n)
            .context(|| format!("{what}: a new sequence"))
    };
    let Started {
        mut seq,
        faulty,
        cost: (mut forwards, mut tokens_fed),
    } = started(model, new, &[tokens], at, &inst, what)?;
    if faulty {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let mut out = Vec::new();
    let mut from = if source.is_some() { prompt_len } else { 0 };
    while from < n {
        let end = from.saturating_add(c).min(n);
        let ctx = || format!("{what}: chunk at positions {from}..{end}");
        if end <= prompt_len {
            seq.forward(&tokens[from..end], Rows::None).context(ctx)?;
        } else {
            let first = prompt_len.saturating_sub(from);
            out.push(logits_of(
                seq.as_mut(),
                &tokens[from..end],
                Rows::From(first),
                ctx,
            )?);
        }
        forwards += 1;
        tokens_fed += end - from;
        from = end;
    }
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| "joining the chunks' logits".into())?,
        forwards,
        tokens_fed,
        trace: take_trace(seq.as_mut()),
    })
}

/// Chunked prefill on a model that returns only the last row: for each span position p a
/// fresh sequence fed `tokens[..p + 1]` in chunks of `c` from position 0, whose last chunk
/// (cut short at p) gives p's row. Row p is computed at the offset and place in its chunk
/// that one chunked prefill of the whole sequence gives it; only the chunk's later rows, which
/// a causal model's row p cannot see, are left out (so its matrix height is p + 1 − offset
/// rather than c). Quadratic in the span, like such a model's prefill. `aligned`
/// (kv_aligned): each prefix starts with the prompt alone in one forward
/// ([`CacheSource::PromptPrefill`]) and chunks from the prompt's end.
fn chunked_by_prefix(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    aligned: bool,
    c: usize,
) -> Result<Fed> {
    let (mut out, mut forwards, mut tokens_fed) = (Vec::new(), 0, 0);
    for end in prompt_len + 1..=tokens.len() {
        let mut seq = model
            .sequence(end)
            .context(|| format!("chunked prefill of the first {end} tokens"))?;
        let mut at = 0;
        if aligned && prompt_len > 0 {
            prompt_only(seq.as_mut(), &[tokens], prompt_len, "chunked prefill")?;
            forwards += 1;
            at = prompt_len;
        }
        while at < end {
            let stop = at.saturating_add(c).min(end);
            let ctx = || format!("chunked prefill of the first {end} tokens: chunk {at}..{stop}");
            if stop < end {
                seq.forward(&tokens[at..stop], Rows::None).context(ctx)?;
            } else {
                out.push(logits_of(
                    seq.as_mut(),
                    &tokens[at..stop],
                    Rows::last(stop - at),
                    ctx,
                )?);
            }
            forwards += 1;
            at = stop;
        }
        tokens_fed += end;
    }
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| "joining the chunked rows".into())?,
        forwards,
        tokens_fed,
        trace: Vec::new(),
    })
}

/// Batched prefill on a model that returns every row: one forward over every row's sequence.
fn batched_prefill(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    prompt_len: usize,
    inst: Instruments,
) -> Result<Fed> {
    let what = "batched prefill";
    let (b, n) = (rows.len(), rows[0].len());
    let mut seq = model
        .batch(b, n)
        .context(|| format!("{what}: a new batch of {b}"))?;
    if instrument(seq.as_mut(), &inst, what)? {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let ctx = || format!("{what}: forward over {b} × {n} tokens");
    let all = logits_of(seq.as_mut(), &rows.concat(), Rows::From(prompt_len), ctx)?;
    Ok(Fed {
        logits: all.narrow(0, 0, n - prompt_len).context(ctx)?,
        forwards: 1,
        tokens_fed: b * n,
        trace: take_trace(seq.as_mut()),
    })
}

/// Batched prefill on a model that returns only the last row: a fresh batch of every row's
/// prefix per span position, as [`last_rows_by_prefix`] does for one sequence.
fn batched_prefill_by_prefix(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    prompt_len: usize,
) -> Result<Fed> {
    let b = rows.len();
    let (mut out, mut tokens_fed) = (Vec::new(), 0);
    for end in prompt_len + 1..=rows[0].len() {
        let ctx = || format!("batched prefill of the first {end} tokens of {b} sequences");
        let mut seq = model.batch(b, end).context(ctx)?;
        let prefixes: Vec<u32> = rows.iter().flat_map(|r| r[..end].iter().copied()).collect();
        let last = logits_of(seq.as_mut(), &prefixes, Rows::last(end), ctx)?;
        out.push(last.narrow(0, 0, 1).context(ctx)?);
        tokens_fed += b * end;
    }
    Ok(Fed {
        forwards: out.len(),
        logits: Tensor::cat(&out, 0).context(|| "joining the batched rows".into())?,
        tokens_fed,
        trace: Vec::new(),
    })
}
