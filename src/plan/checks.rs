//! Checks of a plan against the model that `trace` and `inject` need: layers, positions and
//! paths that exist, and faults that can change something.

use super::spec::{LoadKey, Plan};
use crate::config::{AllOr, LoadedConfig, TracePositions};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
use crate::model::{Capabilities, ModelInfo};
use crate::path::RunPath;

/// Layers and positions named by `trace` and `inject` must exist in this model and sweep.
pub(super) fn check_trace_and_inject(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    plan: &Plan,
) -> Result<()> {
    check_trace(cfg, model, plan)?;
    check_inject(cfg, model, plan)
}

/// The index in `sweep.path` of the first path that `want` accepts and some pair takes.
fn path_index(cfg: &LoadedConfig, plan: &Plan, want: &dyn Fn(RunPath) -> bool) -> Option<usize> {
    cfg.config
        .sweep
        .path
        .iter()
        .position(|&p| want(p) && plan.pairs.iter().any(|q| q.path == p))
}

/// The traced layers and positions exist, and no traced pair takes a batched path.
fn check_trace(cfg: &LoadedConfig, model: &ModelInfo, plan: &Plan) -> Result<()> {
    let n = model.sizes().num_layers;
    let longest = plan.longest_sequence();
    if let Some(t) = &cfg.config.trace {
        if let AllOr::List(ls) = &t.layers
            && let Some(i) = ls.iter().position(|&l| l >= n)
        {
            return Err(no_such_layer(
                cfg,
                model,
                format!("trace.layers[{i}]"),
                ls[i],
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
    // Taps record one sequence's rows; a batched forward holds several.
    if cfg.config.trace.is_some()
        && let Some(i) = path_index(cfg, plan, &|p| p.batch() > 1)
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
    Ok(())
}

/// The fault can change something in this sweep, and its layer and shifts stay inside the
/// model.
fn check_inject(cfg: &LoadedConfig, model: &ModelInfo, plan: &Plan) -> Result<()> {
    let n = model.sizes().num_layers;
    let longest = plan.longest_sequence();
    // A fault that only one kind of path can show needs a pair on that path, or its negative
    // control would pass for the wrong reason.
    if let Some(i) = &cfg.config.inject {
        let chunked = path_index(cfg, plan, &|p| matches!(p, RunPath::Chunked(c) if c > 1));
        if i.chunk_position_shift.unwrap_or(0) > 0 && chunked.is_none() {
            return Err(Error::config(
                &cfg.path,
                "inject.chunk_position_shift",
                "no pair takes a chunked path with chunks of 2 or more tokens \
                 (`sweep.path: [chunked:C]`), so the fault would change nothing",
            ));
        }
        if i.cross_row_cache && path_index(cfg, plan, &|p| p.batch() > 1).is_none() {
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
        return Err(no_such_layer(cfg, model, "inject.layer".into(), l));
    }
    Ok(())
}

/// The error for `field` naming a `layer` the model does not have.
fn no_such_layer(cfg: &LoadedConfig, model: &ModelInfo, field: String, layer: usize) -> Error {
    Error::config(
        &cfg.path,
        field,
        format!(
            "layer {layer} does not exist: `{}` has layers 0–{}",
            model.source,
            model.sizes().num_layers - 1
        ),
    )
}

/// What an implementation can do in one (engine, weights, dtype), or why it cannot exist
/// (the shape of [`super::Support`]).
type SupportFn<'a> =
    &'a dyn Fn(Engine, WeightFormat, RunDtype) -> std::result::Result<Capabilities, String>;

/// The (engine, weights, dtype) groups of a sweep that keep a pair after `exclude`, in
/// sweep order, with their indices in the three lists.
pub(super) type LiveGroup = (LoadKey, (usize, usize, usize));

/// Every impossible (engine, weights, dtype) group of the sweep in one error: each with why,
/// and one fix that works when applied: the list entries whose every group is impossible
/// removed (an emptied `engine` or `weights` list dropped for its default), an `exclude` for
/// the groups left. The field is the first impossible group's axis entry.
pub(super) fn impossible_combinations(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    support: SupportFn,
    live: &[LiveGroup],
) -> Option<Error> {
    let bad: Vec<&LiveGroup> = live
        .iter()
        .filter(|(k, _)| support(k.engine, k.weights, k.dtype).is_err())
        .collect();
    let (first, at) = bad.first()?;
    let mut lines: Vec<String> = bad
        .iter()
        .map(|(k, _)| {
            let why = support(k.engine, k.weights, k.dtype)
                .err()
                .unwrap_or_default();
            format!(
                "  - engine `{}` with {} weights in {}: {why}",
                k.engine, k.weights, k.dtype
            )
        })
        .collect();
    lines.insert(
        0,
        format!(
            "{} of the sweep's (engine, weights, dtype) combinations cannot run `{}`:",
            bad.len(),
            model.source
        ),
    );
    lines.push(fix_for(cfg, support, live));
    Some(Error::config(
        &cfg.path,
        axis_field(support, first, *at),
        lines.join("\n"),
    ))
}

/// The axis entry that makes a group impossible: the engine unless the engine alone is
/// fine, then the weights, then the dtype.
fn axis_field(support: SupportFn, k: &LoadKey, (ei, wi, di): (usize, usize, usize)) -> String {
    let f32_with = |w| support(k.engine, w, RunDtype::F32).is_err();
    if f32_with(WeightFormat::Dequantized) && f32_with(k.weights) {
        format!("sweep.engine[{ei}]")
    } else if f32_with(k.weights) {
        format!("sweep.weights[{wi}]")
    } else {
        format!("sweep.dtype[{di}]")
    }
}

/// The fix, in words a person (or a test) can apply: entries to remove, axis by axis
/// (weights, engine, dtype; each on what the edits before it left), then one `exclude`.
fn fix_for(cfg: &LoadedConfig, support: SupportFn, live: &[LiveGroup]) -> String {
    let s = &cfg.config.sweep;
    let ok = |k: &LoadKey| support(k.engine, k.weights, k.dtype).is_ok();
    // A group of the file's lists that `exclude` emptied stays empty; one a default brings
    // in is new and counts.
    let emptied = |k: &LoadKey| {
        s.engine.contains(&k.engine)
            && s.weights.contains(&k.weights)
            && !live.iter().any(|(l, _)| l == k)
    };
    let groups = |e: &[Engine], w: &[WeightFormat], d: &[RunDtype]| -> Vec<LoadKey> {
        let mut g = Vec::new();
        for &engine in e {
            for &weights in w {
                for &dtype in d {
                    g.push(LoadKey {
                        engine,
                        weights,
                        dtype,
                    });
                }
            }
        }
        g.retain(|k| !emptied(k));
        g
    };
    let (mut e, mut w, mut d) = (s.engine.clone(), s.weights.clone(), s.dtype.clone());
    let mut steps = Vec::new();
    let g = groups(&e, &w, &d);
    steps.extend(edit_axis(
        "weights",
        &mut w,
        &g,
        &ok,
        |k| k.weights,
        Some(WeightFormat::default()),
    ));
    let g = groups(&e, &w, &d);
    steps.extend(edit_axis(
        "engine",
        &mut e,
        &g,
        &ok,
        |k| k.engine,
        Some(Engine::default()),
    ));
    let g = groups(&e, &w, &d);
    steps.extend(edit_axis("dtype", &mut d, &g, &ok, |k| k.dtype, None));
    let g = groups(&e, &w, &d);
    if !g.iter().any(ok) {
        return "No combination of these lists can run this model: change `sweep.engine`, \
                `sweep.weights` or `sweep.dtype` as the reasons above say."
            .into();
    }
    let rest: Vec<String> = g
        .iter()
        .filter(|k| !ok(k))
        .map(|k| {
            format!(
                "{{engine: {}, weights: {}, dtype: {}}}",
                k.engine, k.weights, k.dtype
            )
        })
        .collect();
    if !rest.is_empty() {
        steps.push(format!(
            "add to `exclude:` the entries [{}]",
            rest.join(", ")
        ));
    }
    format!("Fix: {}.", steps.join("; "))
}

/// Removes from an axis list the entries all of whose groups are impossible (removing one
/// loses no pair that could run), unless that empties a list whose default is among them (or
/// that has none); returns the step in words.
fn edit_axis<T: Copy + PartialEq + std::fmt::Display>(
    key: &str,
    list: &mut Vec<T>,
    groups: &[LoadKey],
    ok: &dyn Fn(&LoadKey) -> bool,
    of: fn(&LoadKey) -> T,
    default: Option<T>,
) -> Option<String> {
    let kept: Vec<T> = list
        .iter()
        .copied()
        .filter(|&v| {
            let mut mine = groups.iter().filter(|k| of(k) == v).peekable();
            mine.peek().is_none() || mine.any(ok)
        })
        .collect();
    let next = match (kept.is_empty(), default) {
        (false, _) => kept.clone(),
        (true, Some(d)) if !list.contains(&d) => vec![d],
        (true, _) => return None,
    };
    let step = removal(key, list, &kept, default);
    *list = next;
    step
}

/// "remove `quantized` from `sweep.weights`", with what an emptied list then means.
fn removal<T: std::fmt::Display + PartialEq>(
    key: &str,
    all: &[T],
    kept: &[T],
    default: Option<T>,
) -> Option<String> {
    let gone: Vec<String> = all
        .iter()
        .filter(|a| !kept.contains(a))
        .map(|a| format!("`{a}`"))
        .collect();
    if gone.is_empty() {
        return None;
    }
    let gone = gone.join(", ");
    Some(match default.filter(|_| kept.is_empty()) {
        Some(d) => format!(
            "remove {gone} from `sweep.{key}` (the list is then empty: drop `{key}:` for its \
             default, {d})"
        ),
        None => format!("remove {gone} from `sweep.{key}`"),
    })
}

/// The largest batch a `batched:B` or `batched_prefill:B` path may ask for. A fixed cap,
/// whatever the memory: every row is a whole sequence run in lockstep, so beyond this the
/// sweep measures the machine's patience rather than a serving configuration (batches of
/// serving engines are in the hundreds), and sizes near 2^64 would overflow the arithmetic
/// that sizes buffers.
pub const MAX_BATCH: usize = 1024;

/// Bytes a batch of `rows` sequences of `positions` tokens holds in logits alone when one
/// forward returns every row (`batched_prefill`): rows × positions × vocab f32 values, twice
/// (the model's output and its f32 copy). A lower bound of the forward's need (the cache and
/// activations come on top); `None` when it does not fit in 64 bits.
pub fn batch_logits_bytes(rows: usize, positions: usize, vocab: usize) -> Option<u64> {
    (rows as u64)
        .checked_mul(positions as u64)?
        .checked_mul(vocab as u64)?
        .checked_mul(2 * 4)
}

/// `MemAvailable` of /proc/meminfo in bytes; `None` where it cannot be read (not Linux), and
/// then only [`MAX_BATCH`] bounds the batches.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Chunk and batch sizes the machine can run: a chunk no longer than the model's context
/// (no sequence can be longer), a batch of at most [`MAX_BATCH`] rows whose logits fit in
/// `available` bytes (the host's available memory). A pair that would exhaust memory would
/// abort the process rather than fail, so it is refused here, naming the path and the numbers.
pub(super) fn check_sizes(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    plan: &Plan,
    available: Option<u64>,
) -> Result<()> {
    let longest = plan.longest_sequence();
    let vocab = model.sizes().vocab_size;
    for (i, &path) in cfg.config.sweep.path.iter().enumerate() {
        let field = format!("sweep.path[{i}]");
        let refuse = |m: String| Err(Error::config(&cfg.path, &field, m));
        match path {
            RunPath::Chunked(c) if c > model.context_len() => {
                return refuse(format!(
                    "chunks of {c} tokens are longer than the context of `{}` ({} positions), \
                     which bounds every sequence: use chunked:{} or less",
                    model.source,
                    model.context_len(),
                    model.context_len()
                ));
            }
            RunPath::Batched(b) | RunPath::BatchedPrefill(b) if b > MAX_BATCH => {
                return refuse(format!(
                    "a batch of {b} sequences is above the largest driftsweep runs \
                     ({MAX_BATCH}): use {}:{MAX_BATCH} or less",
                    path.kind()
                ));
            }
            RunPath::BatchedPrefill(b) => {
                let need = batch_logits_bytes(b, longest, vocab).unwrap_or(u64::MAX);
                if let Some(avail) = available
                    && need > avail
                {
                    return refuse(format!(
                        "a batch of {b} sequences of up to {longest} tokens needs at least \
                         {} MiB for its logits ({b} × {longest} × {vocab} values, twice), \
                         more than the {} MiB of memory available: use a smaller batch",
                        need >> 20,
                        avail >> 20
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_bytes_overflow_is_none_not_a_wrap() {
        assert_eq!(batch_logits_bytes(2, 3, 5), Some(2 * 3 * 5 * 8));
        assert_eq!(batch_logits_bytes(usize::MAX, 2, 2), None);
    }
}
