//! SIGINT and SIGTERM during `driftsweep run`: the sweep's [`StopFlag`] says what a signal
//! means at this moment ([`Signalled`]); this handler says so and, where the sweep has
//! nothing to finish, ends the process ([`exit::INTERRUPTED`]). It is the one place besides
//! `main` that ends the process: a handler runs on its own thread while the sweep may be deep
//! in setup, so it cannot return a code to `main`.

use driftsweep::sweep::{Signalled, StopFlag};
use driftsweep::{Error, exit};

/// Makes the first SIGINT or SIGTERM raise `stop` (the sweep finishes the run it is in, then
/// writes the report, marked INCOMPLETE); a second one exits at once (every file already
/// written is whole, and the next run resumes). One handler per process.
pub fn install(stop: &StopFlag) -> Result<(), Error> {
    let stop = stop.clone();
    ctrlc::set_handler(move || match stop.signal() {
        Signalled::DuringSetup => {
            eprintln!("\ninterrupted during setup: nothing was written");
            std::process::exit(exit::INTERRUPTED);
        }
        Signalled::Again => {
            eprintln!("\ninterrupted again: stopping now; run the same command to resume");
            std::process::exit(exit::INTERRUPTED);
        }
        Signalled::FinishRun => eprintln!(
            "\ninterrupt: finishing the current run, then writing the report (again to stop now)"
        ),
    })
    .map_err(|e| Error::internal(format!("cannot install the interrupt handler: {e}")))
}
