//! The CLI's progress bar: a [`Reporter`] drawing runs done of total, the elapsed time, an
//! ETA (the plan's estimate blended with the measured rate), the failures so far and every
//! lane's current run on stderr, when stderr is a terminal. The line's text comes from
//! [`status_line`], a pure function, so its wording is tested without a clock.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use driftsweep::plan::estimate::human_seconds;
use driftsweep::sweep::{Event, Reporter};
use driftsweep::verdict::PairVerdict;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What the bar counts, shared with the line's formatter (which indicatif calls on every
/// tick, so the elapsed time moves between events).
#[derive(Default, Clone)]
struct Tally {
    /// The plan's estimate of the session's time, seconds, when there is one.
    planned_s: Option<f64>,
    done: usize,
    total: usize,
    failures: usize,
    running: BTreeSet<String>,
}

/// The bar, hidden unless enabled and drawn on a terminal.
pub struct Bar {
    bar: Option<ProgressBar>,
    enabled: bool,
    tally: Arc<Mutex<Tally>>,
}

impl Bar {
    /// A bar that draws only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        Bar {
            bar: None,
            enabled: enabled && std::io::stderr().is_terminal(),
            tally: Arc::default(),
        }
    }

    /// The plan's estimate of the sweep's time (`driftsweep plan`'s), which the ETA starts
    /// from before any run has finished.
    pub fn set_estimate(&mut self, seconds: Option<f64>) {
        if let Ok(mut t) = self.tally.lock() {
            t.planned_s = seconds.filter(|s| *s > 0.0);
        }
    }

    fn start(&mut self, runs: usize) {
        if let Ok(mut t) = self.tally.lock() {
            t.total = runs;
            t.done = 0;
        }
        let tally = Arc::clone(&self.tally);
        let line = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Ok(t) = tally.lock() {
                let _ = w.write_str(&status_line(&Status {
                    done: t.done,
                    total: t.total,
                    elapsed_s: state.elapsed().as_secs_f64(),
                    planned_s: t.planned_s,
                    failures: t.failures,
                    running: t.running.iter().map(String::as_str).collect(),
                }));
            }
        };
        let pb = ProgressBar::with_draw_target(Some(runs as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {status}") {
            pb.set_style(style.with_key("status", line));
        }
        pb.enable_steady_tick(std::time::Duration::from_secs(1));
        self.bar = Some(pb);
    }
}

/// What the progress line says, at one moment.
pub struct Status<'a> {
    /// Runs finished this session.
    pub done: usize,
    /// Runs this session computes.
    pub total: usize,
    /// Seconds since the runs began.
    pub elapsed_s: f64,
    /// The plan's estimate of the whole session, seconds.
    pub planned_s: Option<f64>,
    /// Pairs failed or INCOMPLETE so far.
    pub failures: usize,
    /// The runs in progress, one per busy lane.
    pub running: Vec<&'a str>,
}

/// Seconds left: the plan's estimate of the remaining share of the work, blended with the
/// measured rate, which weighs more as more runs finish. `None` before anything is known
/// (no estimate, nothing finished): a bar never says "ETA 0s" at the start.
pub fn eta_s(s: &Status) -> Option<f64> {
    if s.total == 0 || s.done >= s.total {
        return (s.total > 0).then_some(0.0);
    }
    let left = (s.total - s.done) as f64;
    let planned = s.planned_s.map(|p| p * left / s.total as f64);
    let measured = (s.done > 0).then(|| s.elapsed_s / s.done as f64 * left);
    match (planned, measured) {
        (Some(p), Some(m)) => {
            // A quarter of the runs done gives the measured rate half the weight.
            let k = (s.total as f64 / 4.0).max(1.0);
            let w = s.done as f64 / (s.done as f64 + k);
            Some((1.0 - w) * p + w * m)
        }
        (p, m) => p.or(m),
    }
}

/// The text after the bar: elapsed, ETA, failures so far and the runs in progress.
pub fn status_line(s: &Status) -> String {
    let eta = eta_s(s).map_or("ETA estimating…".to_string(), |e| {
        format!("ETA {}", human_seconds(e))
    });
    let mut out = format!(
        "{}/{} runs · elapsed {} · {eta} · {} failed",
        s.done,
        s.total,
        human_seconds(s.elapsed_s),
        s.failures
    );
    if !s.running.is_empty() {
        out.push_str(" · running: ");
        out.push_str(&s.running.join(" | "));
    }
    out
}

impl Reporter for Bar {
    fn event(&mut self, event: &Event) {
        if let Event::Planned { runs, .. } = event
            && self.enabled
        {
            self.start(*runs);
        }
        if let Ok(mut t) = self.tally.lock() {
            match event {
                Event::RunStarted { run_id } => {
                    t.running.insert(run_id.clone());
                }
                Event::RunFinished { run_id, .. } => {
                    t.running.remove(run_id);
                    t.done += 1;
                }
                Event::PairFinished { verdict, .. } => {
                    if matches!(
                        verdict,
                        PairVerdict::FailEquiv | PairVerdict::FailDrift | PairVerdict::Incomplete
                    ) {
                        t.failures += 1;
                    }
                }
                _ => {}
            }
        }
        match event {
            Event::RunFinished { .. } => {
                if let Some(pb) = &self.bar {
                    pb.inc(1);
                }
            }
            Event::Finished { .. } => {
                if let Some(pb) = self.bar.take() {
                    pb.finish_and_clear();
                }
            }
            _ => {
                if let Some(pb) = &self.bar {
                    pb.tick();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(done: usize, elapsed_s: f64, planned_s: Option<f64>) -> Status<'static> {
        Status {
            done,
            total: 24,
            elapsed_s,
            planned_s,
            failures: 0,
            running: Vec::new(),
        }
    }

    #[test]
    fn the_eta_starts_from_the_plan_and_never_reads_zero_at_the_start() {
        assert_eq!(eta_s(&status(0, 0.0, Some(75.0))), Some(75.0));
        let line = status_line(&status(0, 0.0, None));
        assert!(line.contains("ETA estimating…"), "{line}");
        assert!(!line.contains("ETA 0 s"), "{line}");
    }

    #[test]
    fn the_measured_rate_takes_over_as_runs_finish() {
        // The plan said 75 s; runs really take 5 s each (120 s in all).
        let early = eta_s(&status(2, 10.0, Some(75.0))).unwrap();
        let late = eta_s(&status(20, 100.0, Some(75.0))).unwrap();
        let plan_only = 75.0 * 22.0 / 24.0;
        assert!((early - plan_only).abs() < (early - 110.0).abs(), "{early}");
        assert!((late - 20.0).abs() < 3.0, "{late}");
        // Without a plan, the measured rate alone.
        assert_eq!(eta_s(&status(12, 60.0, None)), Some(60.0));
    }

    #[test]
    fn the_line_names_elapsed_eta_failures_and_every_lane_run() {
        let s = Status {
            done: 3,
            total: 24,
            elapsed_s: 65.0,
            planned_s: None,
            failures: 1,
            running: vec!["a.prefill", "b.decode"],
        };
        assert_eq!(
            status_line(&s),
            "3/24 runs · elapsed 1 min 05 s · ETA 7 min 35 s · 1 failed · running: a.prefill | b.decode"
        );
    }
}
