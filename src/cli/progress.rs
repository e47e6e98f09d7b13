//! The CLI's progress bar: a [`Reporter`] drawing runs done of total, the current run and an
//! ETA on stderr, when stderr is a terminal.

use std::io::IsTerminal;

use driftsweep::sweep::{Event, Reporter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar, hidden unless enabled and drawn on a terminal.
pub struct Bar {
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl Bar {
    /// A bar that draws only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        Bar {
            bar: None,
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }
}

impl Reporter for Bar {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Planned { runs, .. } if self.enabled => {
                let pb =
                    ProgressBar::with_draw_target(Some(*runs as u64), ProgressDrawTarget::stderr());
                if let Ok(style) =
                    ProgressStyle::with_template("{bar:30} {pos}/{len} runs, ETA {eta}  {msg}")
                {
                    pb.set_style(style);
                }
                self.bar = Some(pb);
            }
            Event::RunStarted { run_id } => {
                if let Some(pb) = &self.bar {
                    pb.set_message(run_id.clone());
                }
            }
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
            _ => {}
        }
    }
}
