//! Pairs in parallel: how many lanes (threads, each running whole pairs one after another
//! on the group's one loaded model) a load group gets, and the thread pool each lane runs in.
//!
//! Why: a small model's operations are too small to keep two cores busy. The built-in
//! model's matmuls are a few hundred microseconds; candle splits each across its threads and
//! the threads spend the difference spinning and yielding at the barrier. Two pairs side by
//! side, each on one core, use the machine instead. Each lane's pairs are computed exactly
//! as a sequential run computes them (the same operations in the same order on the same
//! model), so the metrics are bit-identical; `tests/parallel_pairs.rs` holds them to it.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::engine::Engine;

/// Weights above this many bytes run one lane: near the memory bandwidth a second lane would
/// compete for it rather than use an idle core, and every lane holds its own activations and
/// KV caches. SmolLM2-135M (269 MB in bf16/f16, 538 MB in f32) is below: its CPU decode steps
/// take 1.4–2.9 times weights ÷ bandwidth, and its 12-pair race ran 77.2 s on two one-thread
/// lanes against 106.3 s on one two-thread lane, with the same metrics (BENCHMARKS.md, 2
/// cores).
pub const LANE_WEIGHT_LIMIT: u64 = 1 << 30;

/// How a load group's pairs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Threads that each run whole pairs.
    pub count: usize,
    /// CPU threads each lane's operations use (candle's matmul and elementwise threads).
    pub threads_each: usize,
}

/// What decides the lanes of one load group.
#[derive(Debug, Clone, Copy)]
pub struct LaneInputs {
    /// The run device is the CPU (CUDA and Metal run one lane: one stream).
    pub cpu: bool,
    /// The engine of the group's model.
    pub engine: Engine,
    /// Bytes of the model's weights in the group's dtype.
    pub weight_bytes: u64,
    /// CPU threads available (candle's thread count).
    pub threads: usize,
    /// Independent units of work in the group (pairs sharing a prefill are one unit).
    pub units: usize,
    /// `--lanes N`, when the user chose.
    pub requested: Option<usize>,
}

/// The lanes for one group. candle-transformers' models always run one lane: each holds
/// its state inside the model, behind one lock, and refuses a second open sequence. Else a
/// user's `--lanes` wins (capped by the work there is); otherwise, on the CPU, as many lanes
/// as threads for the own decoders and a user's model when the weights are small
/// ([`LANE_WEIGHT_LIMIT`]), and one lane on a GPU.
pub fn choose(i: LaneInputs) -> Lanes {
    let threads = i.threads.max(1);
    let count = match i.requested {
        // Whatever was asked: such a model refuses a second sequence while one is open.
        _ if i.engine == Engine::CandleTransformers => 1,
        Some(n) => n,
        None if !i.cpu => 1,
        None if i.weight_bytes > LANE_WEIGHT_LIMIT => 1,
        None => threads,
    };
    let count = count.clamp(1, i.units.max(1));
    Lanes {
        count,
        threads_each: if i.cpu {
            (threads / count).max(1)
        } else {
            threads
        },
    }
}

/// Does `work` on every item, taking items from the front in order, on `lanes`: one lane
/// runs them here, one after another; more run side by side, each lane in its own thread
/// pool of `threads_each` (candle's matmuls split over the current rayon pool, so they then
/// use that lane's threads, not the whole machine's). Returns false as soon as `work` does
/// (the worker must stop); the other lanes finish the item they are on and stop too, as
/// they find the same stop or closed channel.
pub fn run<T: Send>(lanes: Lanes, items: Vec<T>, work: impl Fn(T) -> bool + Sync) -> bool {
    let queue = Mutex::new(VecDeque::from(items));
    let drain = || {
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            match next {
                None => return true,
                Some(item) => {
                    if !work(item) {
                        return false;
                    }
                }
            }
        }
    };
    if lanes.count <= 1 {
        return drain();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes.count)
            .map(|_| {
                scope.spawn(|| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(lanes.threads_each)
                        .thread_name(|i| format!("lane-{i}"))
                        .build();
                    match pool {
                        Ok(pool) => pool.install(drain),
                        Err(_) => drain(),
                    }
                })
            })
            .collect();
        // Every lane runs to its end; a lane's panic is re-raised here.
        let done: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        done.into_iter().all(|d| d)
    })
}

/// The lanes a load group of `units` independent units (pairs sharing a prefill are one)
/// runs on: what the worker chooses, and what `plan`'s estimate assumes.
pub fn group_lanes(
    info: &crate::model::ModelInfo,
    key: crate::plan::LoadKey,
    cpu: bool,
    threads: usize,
    units: usize,
    requested: Option<usize>,
) -> Lanes {
    let params = info.family.parameter_count();
    // Quantized weights: about 4.5 bits a parameter (Q4 blocks); an estimate that only has
    // to tell small models from large ones.
    let weight_bytes = if key.weights.is_default() {
        params * key.dtype.candle().size_in_bytes() as u64
    } else {
        params * 9 / 16
    };
    choose(LaneInputs {
        cpu,
        engine: key.engine,
        weight_bytes,
        threads,
        units,
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENTIAL: Lanes = Lanes {
        count: 1,
        threads_each: 2,
    };

    fn inputs() -> LaneInputs {
        LaneInputs {
            cpu: true,
            engine: Engine::Driftsweep,
            weight_bytes: 10 << 20,
            threads: 2,
            units: 36,
            requested: None,
        }
    }

    #[test]
    fn small_models_on_the_cpu_get_a_lane_per_thread() {
        assert_eq!(
            choose(inputs()),
            Lanes {
                count: 2,
                threads_each: 1
            }
        );
    }

    #[test]
    fn large_models_candle_transformers_and_gpus_run_one_lane() {
        let big = LaneInputs {
            weight_bytes: LANE_WEIGHT_LIMIT + 1,
            ..inputs()
        };
        let ct = LaneInputs {
            engine: Engine::CandleTransformers,
            ..inputs()
        };
        let gpu = LaneInputs {
            cpu: false,
            ..inputs()
        };
        for i in [big, ct, gpu] {
            assert_eq!(choose(i), SEQUENTIAL);
        }
    }

    #[test]
    fn a_request_wins_but_never_exceeds_the_work() {
        let asked = |n, units| {
            choose(LaneInputs {
                requested: Some(n),
                units,
                ..inputs()
            })
        };
        assert_eq!(asked(1, 36), SEQUENTIAL);
        assert_eq!(asked(4, 36).count, 4);
        assert_eq!(asked(4, 36).threads_each, 1);
        assert_eq!(asked(4, 3).count, 3);
        assert_eq!(
            choose(LaneInputs {
                units: 1,
                ..inputs()
            })
            .count,
            1
        );
    }

    #[test]
    fn every_item_is_done_once_and_a_stop_ends_every_lane() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for count in [1, 2, 3] {
            let lanes = Lanes {
                count,
                threads_each: 1,
            };
            let seen = Mutex::new(Vec::new());
            assert!(run(lanes, (0..20).collect(), |i| {
                seen.lock().unwrap().push(i);
                true
            }));
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert_eq!(seen, (0..20).collect::<Vec<_>>());
            // Negative control: a stop at item 5 ends the work early.
            let done = AtomicUsize::new(0);
            assert!(!run(lanes, (0..20).collect(), |i: usize| {
                done.fetch_add(1, Ordering::SeqCst);
                i < 5
            }));
            assert!(done.load(Ordering::SeqCst) < 20);
        }
    }
}
