//! The reference engine's vocabulary: dtypes, islands, time limits, errors, where python is.

use std::path::PathBuf;
use std::time::Duration;

/// The worker's source, embedded: the binary runs it with `python -c`.
pub const WORKER_SCRIPT: &str = include_str!("../../scripts/reference/transformers_worker.py");

/// The command that installs the worker's python stack (into `.peer-venv/`).
pub const INSTALL_COMMAND: &str = "bash scripts/peer/setup.sh";

/// Names the python to run the worker with (else `.peer-venv/bin/python` of the repository).
pub const PYTHON_VAR: &str = "DRIFTSWEEP_TRANSFORMERS_PYTHON";

/// Names the repository whose `.peer-venv/` to use (else the one the binary was built from).
pub const REPO_VAR: &str = "DRIFTSWEEP_REPO";

/// How many bytes of the worker's stderr an error keeps (the last ones).
pub const STDERR_TAIL: usize = 2048;

/// The dtype the reference computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefDtype {
    /// float32 (the weights and every activation).
    F32,
    /// float64.
    F64,
}

impl RefDtype {
    /// The name the worker protocol (and the sweep file) uses: `f32` or `f64`.
    pub fn name(self) -> &'static str {
        match self {
            RefDtype::F32 => "f32",
            RefDtype::F64 => "f64",
        }
    }
}

impl std::fmt::Display for RefDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a float64 model keeps transformers' float32 islands: the parts its modeling code
/// computes in float32 whatever the model's dtype (RMSNorm, the attention softmax, the rotary
/// table: upcasts meant for half precision, which are downcasts in a float64 model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Islands {
    /// As transformers ships them: a float64 model is float64 except there (its logits are
    /// about 1e-6 relative from exact float64).
    #[default]
    AsShipped,
    /// Computed in float64 too (float64 models only): every float32 cast and softmax of the
    /// forward becomes float64 and the default RoPE's frequencies are recomputed in float64,
    /// every operation otherwise as the modeling code has it.
    Widened,
}

impl Islands {
    /// The name the worker protocol uses: `as_shipped` or `widened`.
    pub fn name(self) -> &'static str {
        match self {
            Islands::AsShipped => "as_shipped",
            Islands::Widened => "widened",
        }
    }
}

/// How long the worker may take to answer. Generous: the CPU may be shared, and a float64
/// forward of a large vocabulary is slow; the limits only exist so that a stuck worker ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeLimits {
    /// From the start to the worker's hello (python imports torch and transformers).
    pub start: Duration,
    /// One model load (a GGUF file is dequantized in python).
    pub load: Duration,
    /// A forward's base.
    pub forward_base: Duration,
    /// A forward's time per token id, added to the base.
    pub forward_per_token: Duration,
}

impl Default for TimeLimits {
    fn default() -> Self {
        TimeLimits {
            start: Duration::from_secs(300),
            load: Duration::from_secs(900),
            forward_base: Duration::from_secs(60),
            forward_per_token: Duration::from_millis(500),
        }
    }
}

impl TimeLimits {
    /// The limit of a forward over `tokens` ids.
    pub fn forward(&self, tokens: usize) -> Duration {
        self.forward_base + self.forward_per_token * u32::try_from(tokens).unwrap_or(u32::MAX)
    }
}

/// Why the reference could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    /// No python with torch and transformers: `command` installs it.
    #[error("the transformers reference is not installed ({reason}); install it with `{command}`")]
    NotInstalled {
        /// The install command.
        command: String,
        /// What was tried and what failed.
        reason: String,
    },
    /// transformers does not read this architecture (from these files).
    #[error("transformers does not read architecture `{arch}`: {msg}")]
    Unsupported {
        /// The architecture the files declare (`model_type`, `general.architecture`), or
        /// `unknown`.
        arch: String,
        /// transformers' own words.
        msg: String,
    },
    /// The request is wrong: a path that does not exist, a token id outside the vocabulary.
    #[error("bad request to the transformers reference: {msg}")]
    BadRequest {
        /// What is wrong.
        msg: String,
    },
    /// The worker failed: it raised, died, or answered something that is not a valid frame.
    #[error("the transformers worker failed: {msg}{}", tail_text(stderr_tail))]
    Worker {
        /// What happened.
        msg: String,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
    /// The worker did not answer in time; it was killed.
    #[error(
        "the transformers worker did not answer within {secs} s and was killed{}",
        tail_text(stderr_tail)
    )]
    TimedOut {
        /// The limit, in seconds.
        secs: f64,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
}

fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ends: {}", tail.trim_end())
    }
}

impl ReferenceError {
    /// Whether the user's input is at fault (a reference the sweep cannot run: exit 2), rather
    /// than the worker's run (the pair is INCOMPLETE and the sweep goes on).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ReferenceError::NotInstalled { .. }
                | ReferenceError::Unsupported { .. }
                | ReferenceError::BadRequest { .. }
        )
    }
}

/// The repository whose `.peer-venv/` the worker uses: `DRIFTSWEEP_REPO`, else the one this
/// crate was built from.
pub fn repo() -> PathBuf {
    std::env::var_os(REPO_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The python the worker runs with: `DRIFTSWEEP_TRANSFORMERS_PYTHON`, else
/// `<repo>/.peer-venv/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os(PYTHON_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".peer-venv/bin/python"))
}
