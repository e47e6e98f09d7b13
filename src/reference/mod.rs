//! The `transformers` reference engine: PyTorch + Hugging Face transformers, on the CPU with
//! eager attention and no cache, in float32 or float64, in a worker process driftsweep starts
//! ([`TransformersWorker`]). It is the model's reference definition: the modeling code people
//! hold a port against, run on the same weights (a Hugging Face directory, synthetic or real,
//! or a GGUF file where transformers reads that architecture).
//!
//! The worker is `scripts/reference/transformers_worker.py`, embedded in the binary
//! ([`WORKER_SCRIPT`]) and run with `python -c`, so no file has to be found at run time. Its
//! python is the one of `.peer-venv/` (made by `bash scripts/peer/setup.sh`, the peer's pinned
//! stack: torch 2.15.0, transformers 5.23.0, gguf 0.19.0), in the repository the binary was
//! built from (`DRIFTSWEEP_REPO` overrides), or the interpreter `DRIFTSWEEP_TRANSFORMERS_PYTHON`
//! names. Requests and answers cross the pipes as one JSON header line each, then raw
//! little-endian payloads (token ids as u32, logits as f64 or f32), never JSON arrays.
//!
//! A worker that dies, answers garbage or stays silent past its time limit never hangs the
//! caller: each answer is awaited with a deadline (a base plus a time per token for a
//! forward, [`TimeLimits`]), the child is killed, and the error carries the last
//! [`STDERR_TAIL`] bytes of what it wrote to stderr.

mod frame;
mod types;
mod worker;

pub use types::*;
pub use worker::{Handle, Loaded, TransformersWorker};

#[cfg(test)]
mod tests;
