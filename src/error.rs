//! Typed errors at the library boundary.
//!
//! Every variant carries enough context (file, field, run) for the CLI to print one clear line.
//! [`Error::exit_code`] (in [`crate::exit`], beside the codes) maps them onto the exit codes of
//! docs/design.md, "Results on disk".

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in driftsweep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sweep file is malformed or asks for something impossible.
    #[error("{}", config_line(file, location, field, message))]
    Config {
        /// The sweep file.
        file: PathBuf,
        /// `line L, column C: ` when known, otherwise empty.
        location: String,
        /// Dotted path of the offending key, for example `sweep.span[2]`.
        field: String,
        /// What is wrong, in words.
        message: String,
    },
    /// A model could not be found, read or built.
    #[error("model `{source_name}`: {message}")]
    Model {
        /// The `model.source` string from the sweep file.
        source_name: String,
        /// What is wrong, in words.
        message: String,
    },
    /// A results directory could not be read or written.
    #[error("{path}: {message}")]
    Store {
        /// The file or directory involved.
        path: PathBuf,
        /// What is wrong, in words.
        message: String,
    },
    /// A template could not be parsed or rendered.
    #[error("template `{name}`: {message}")]
    Template {
        /// Template name.
        name: String,
        /// Tera's explanation, with its causes.
        message: String,
    },
    /// A failure of driftsweep itself (a panicked worker, a thread that cannot start): never
    /// the user's input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The sweep stopped at once after this many run records, as `run --exit-after-runs`
    /// asks (a deterministic stand-in for SIGKILL in tests of what survives): nothing was
    /// finalized. The CLI exits with [`crate::exit::KILLED`] and prints nothing, as a killed
    /// process would.
    #[error("stopped at once after {runs} run record(s) (--exit-after-runs)")]
    Killed {
        /// Run records written before the stop.
        runs: usize,
    },
    /// A tensor operation failed while running the model or comparing logits.
    #[error("{context}: {}", candle_text(source))]
    Candle {
        /// What was being done.
        context: String,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },
}

fn config_line(file: &std::path::Path, location: &str, field: &str, message: &str) -> String {
    let field = if field.is_empty() {
        String::new()
    } else {
        format!("`{field}`: ")
    };
    format!("{}: {location}{field}{message}", file.display())
}

/// A candle error as one line: its causes joined by `: `, without the backtrace candle
/// attaches when backtraces are enabled (a library user's process may enable them).
pub fn candle_text(e: &candle_core::Error) -> String {
    use candle_core::Error as C;
    match e {
        C::WithBacktrace { inner, .. } => candle_text(inner),
        C::Context { inner, context } => format!("{context}: {}", candle_text(inner)),
        C::WithPath { inner, path } => format!("{}: {}", path.display(), candle_text(inner)),
        other => other.to_string().lines().collect::<Vec<_>>().join(": "),
    }
}

impl Error {
    /// Builds a [`Error::Config`] for a field of a sweep file, without a line number.
    pub fn config(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            location: String::new(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Builds a [`Error::Model`].
    pub fn model(source: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Model {
            source_name: source.into(),
            message: message.into(),
        }
    }

    /// Builds a [`Error::Store`].
    pub fn store(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Store {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// Builds a [`Error::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// Whether the error is the user's to fix (bad input: exit 2) rather than driftsweep's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Error::Internal(_) | Error::Candle { .. } | Error::Killed { .. }
        )
    }
}

/// Adds context to candle results, turning them into [`Error::Candle`].
pub trait CandleContext<T> {
    /// Attaches `context` to a candle error.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Candle {
            context: context(),
            source,
        })
    }
}
