//! What a sweep tells the outside while it runs: typed events for reporters (the CLI's
//! progress bar is one), and the stop flag through which the outside asks it to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::ModelLoad;
use crate::verdict::PairVerdict;

/// One thing that happened in a sweep, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// The work is known: `runs` runs to compute in this session, after `reused_pairs` pairs
    /// taken from earlier sessions.
    Planned {
        /// Runs this session will compute (two per pair to do).
        runs: usize,
        /// Pairs reused from earlier sessions.
        reused_pairs: usize,
    },
    /// Weights were loaded.
    ModelLoaded(ModelLoad),
    /// A run (or a traced re-run) began.
    RunStarted {
        /// Its id.
        run_id: String,
    },
    /// A run ended and its record was written.
    RunFinished {
        /// Its id.
        run_id: String,
        /// It produced logits (not failed or skipped).
        ok: bool,
    },
    /// A pair was judged (or skipped) and its record written.
    PairFinished {
        /// Pair id.
        pair_id: String,
        /// Its verdict.
        verdict: PairVerdict,
    },
    /// The session's work ended (done, or stopped).
    Finished {
        /// It stopped on request before its work was done.
        stopped: bool,
    },
}

/// Receives a sweep's events, on the thread that called [`super::run_sweep`].
pub trait Reporter {
    /// One event.
    fn event(&mut self, event: &Event);
}

/// A reporter that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn event(&mut self, _: &Event) {}
}

/// Asks one sweep to stop after the run it is in. Clones share the flag, so a signal handler
/// or another thread can hold one; each sweep has its own, so a library user can run several
/// sweeps in one process.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    requested: AtomicBool,
    // Set once the sweep starts writing its session: before that, nothing needs finishing.
    recording: AtomicBool,
}

impl StopFlag {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag; returns whether it was already raised.
    pub fn request(&self) -> bool {
        self.0.requested.swap(true, Ordering::SeqCst)
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Marks the point from which the sweep has a session to finish (its first manifest).
    pub fn start_recording(&self) {
        self.0.recording.store(true, Ordering::SeqCst);
    }

    /// Whether the sweep has begun recording: until then a stop request can end the process
    /// at once, since setup (loading, checking, planning) leaves nothing to finish.
    pub fn recording(&self) -> bool {
        self.0.recording.load(Ordering::SeqCst)
    }

    /// What a signal (SIGINT, SIGTERM) asks of the sweep now, raising the flag once the sweep
    /// is recording. The caller's handler acts on it: the library never ends the process.
    pub fn signal(&self) -> Signalled {
        if !self.recording() {
            Signalled::DuringSetup
        } else if self.request() {
            Signalled::Again
        } else {
            Signalled::FinishRun
        }
    }
}

/// What a signal means to a sweep, by when it comes ([`StopFlag::signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// During setup (reading, checking, planning): nothing is written yet, so the process
    /// may end now rather than after setup, however long a hostile input makes it.
    DuringSetup,
    /// The first request while recording: the flag is raised, and the sweep finishes the run
    /// it is in, then writes the report, marked INCOMPLETE.
    FinishRun,
    /// A second request: the process may end now (every file already written is whole, and
    /// the next run resumes).
    Again,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_ends_setup_then_asks_to_finish_the_run_then_to_stop_now() {
        let stop = StopFlag::new();
        assert_eq!(stop.signal(), Signalled::DuringSetup);
        assert!(!stop.requested(), "setup has nothing to finish");
        stop.start_recording();
        assert_eq!(stop.signal(), Signalled::FinishRun);
        assert!(stop.requested());
        assert_eq!(stop.signal(), Signalled::Again);
    }
}
