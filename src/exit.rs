//! The exit codes of the `driftsweep` command line, in one place: the binary maps every
//! outcome onto these, and the tests compare against them (docs/design.md, "Results on disk").

/// The sweep passed (`run`, `merge`, `report`), nothing regressed (`diff`), every re-run pair
/// was identical (`verify`), or the command simply did its work (`plan`, `slurm`, `bench`,
/// `generate`).
pub const PASS: i32 = 0;

/// A pair failed (`run`, `merge`, `report`), a pair regressed beyond `--fail-on` (`diff`,
/// `run --baseline`), or a re-run metric moved (`verify`).
pub const FAIL: i32 = 1;

/// Bad input or usage: the message names the file and the field (clap's usage errors exit
/// with this code too).
pub const BAD_INPUT: i32 = 2;

/// Nothing to judge: the sweep is INCOMPLETE (a run failed or is missing, nothing compared),
/// `diff` compared no pair in both, or `verify` verified nothing or a pair errored.
pub const INCOMPLETE: i32 = 3;

/// A failure of driftsweep itself (a panicked worker, a candle failure outside a run), never
/// the input's.
pub const INTERNAL: i32 = 4;

/// Stopped by SIGINT or SIGTERM (128 + 2, as a shell reports a process a signal ended): the
/// next `run` of the same command resumes.
pub const INTERRUPTED: i32 = 130;

/// Ended at once by `run --exit-after-runs` (a hidden testing aid), with the code a SIGKILL
/// gives (128 + 9): nothing is finalized, as after a real kill.
pub const KILLED: i32 = 137;

// Here rather than in `error`, which imports nothing of the crate: the mapping belongs with
// the codes it maps onto.
impl crate::Error {
    /// Exit code for the CLI: bad input (config, model, store, template) is [`BAD_INPUT`]; an
    /// internal failure (a panic, or a candle failure that escapes a run) is [`INTERNAL`]; a
    /// sweep ended by `--exit-after-runs` is [`KILLED`]. Failures inside runs never get here:
    /// they become INCOMPLETE pairs.
    pub fn exit_code(&self) -> i32 {
        match self {
            crate::Error::Killed { .. } => KILLED,
            e if e.is_bad_input() => BAD_INPUT,
            _ => INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn codes_are_distinct_and_fit_a_process_status() {
        let all = [
            PASS,
            FAIL,
            BAD_INPUT,
            INCOMPLETE,
            INTERNAL,
            INTERRUPTED,
            KILLED,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!((0..=255).contains(a), "{a}");
            assert!(!all[i + 1..].contains(a), "{a} twice");
        }
    }

    #[test]
    fn errors_map_onto_their_codes() {
        assert_eq!(Error::config("f.yaml", "x", "bad").exit_code(), BAD_INPUT);
        assert_eq!(Error::store("dir", "bad").exit_code(), BAD_INPUT);
        assert_eq!(Error::model("m", "bad").exit_code(), BAD_INPUT);
        assert_eq!(Error::internal("bug").exit_code(), INTERNAL);
        assert_eq!(Error::Killed { runs: 3 }.exit_code(), KILLED);
    }
}
