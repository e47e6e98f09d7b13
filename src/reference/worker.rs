//! One worker process and its three pipes. A writer thread feeds stdin (so a worker that stops
//! reading cannot block the caller), a reader thread turns stdout into frames sent over a
//! channel (awaited with a deadline), and a third thread keeps the last [`STDERR_TAIL`] bytes
//! of stderr for the error messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde_json::json;

use super::frame::{self, Frame, PayloadLimit};
use super::types::{
    INSTALL_COMMAND, Islands, RefDtype, ReferenceError, STDERR_TAIL, TimeLimits, WORKER_SCRIPT,
};

/// What the worker says first.
const HELLO: &str = "driftsweep-transformers-worker";

/// A model the worker holds, by its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    id: u64,
    vocab: usize,
}

impl Handle {
    /// The model's vocabulary: the width of its logits.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

/// What a load found: the transformers class and the architecture it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The handle for [`TransformersWorker::forward`].
    pub handle: Handle,
    /// The transformers class, e.g. `LlamaForCausalLM`.
    pub class: String,
    /// The architecture the files declare, e.g. `llama`.
    pub arch: String,
    /// Every parameter or buffer held in another dtype than the one asked for, by name
    /// (transformers keeps the rotary frequencies in float32).
    pub other_dtypes: BTreeMap<String, String>,
}

/// The last bytes of a stream, shared with the thread that reads it.
#[derive(Debug, Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.extend(bytes);
        let extra = t.len().saturating_sub(STDERR_TAIL);
        t.drain(..extra);
    }

    fn text(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = t.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// One transformers worker process: models are loaded once and kept while it lives. Every
/// call either answers or fails within its time limit; after a failure that killed the
/// worker (timeout, death, garbage), every later call fails at once with the first error's
/// words.
#[derive(Debug)]
pub struct TransformersWorker {
    child: Child,
    to_worker: Option<Sender<Vec<u8>>>,
    frames: Receiver<Result<Option<Frame>, String>>,
    limit: PayloadLimit,
    stderr: Tail,
    stderr_done: Receiver<()>,
    limits: TimeLimits,
    dead: Option<String>,
    loaded: HashMap<(PathBuf, RefDtype, Islands), Loaded>,
    versions: (String, String),
}

impl TransformersWorker {
    /// Finds the venv python ([`super::python`]) and starts the worker with the default time
    /// limits.
    pub fn start() -> Result<Self, ReferenceError> {
        Self::start_with(&super::types::python(), TimeLimits::default())
    }

    /// Starts the worker with this python and these limits.
    pub fn start_with(python: &Path, limits: TimeLimits) -> Result<Self, ReferenceError> {
        if !python.exists() {
            return Err(not_installed(format!(
                "{} does not exist",
                python.display()
            )));
        }
        let mut cmd = Command::new(python);
        cmd.arg("-c").arg(WORKER_SCRIPT);
        Self::spawn(cmd, limits).map_err(|e| match e {
            ReferenceError::Worker { msg, stderr_tail } => not_installed(format!(
                "{} did not start the worker: {msg}{}",
                python.display(),
                if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", stderr_tail.trim_end())
                }
            )),
            other => other,
        })
    }

    /// Starts `cmd` as the worker and waits for its hello.
    pub(super) fn spawn(mut cmd: Command, limits: TimeLimits) -> Result<Self, ReferenceError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| not_installed(format!("cannot run {:?}: {e}", cmd.get_program())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(worker_error("the worker's pipes could not be opened", ""));
        };
        let limit = PayloadLimit::default();
        let tail = Tail::default();
        let mut w = TransformersWorker {
            child,
            to_worker: Some(writer(stdin)),
            frames: reader(stdout, limit.clone()),
            limit,
            stderr: tail.clone(),
            stderr_done: drain(stderr, tail),
            limits,
            dead: None,
            loaded: HashMap::new(),
            versions: Default::default(),
        };
        let hello = w.answer(limits.start)?;
        if hello.str("hello") != Some(HELLO) {
            let msg = format!(
                "the worker's first frame is not its hello: {:?}",
                hello.header
            );
            return Err(w.kill(msg));
        }
        let v = |k: &str| hello.str(k).unwrap_or("?").to_string();
        w.versions = (v("torch"), v("transformers"));
        Ok(w)
    }

    /// The torch and transformers versions the worker imported.
    pub fn versions(&self) -> (&str, &str) {
        (&self.versions.0, &self.versions.1)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Loads `model` (a Hugging Face directory or a GGUF file) in `dtype`, as transformers
    /// ships it ([`Islands::AsShipped`]).
    pub fn load(&mut self, model: &Path, dtype: RefDtype) -> Result<Loaded, ReferenceError> {
        self.load_with(model, dtype, Islands::AsShipped)
    }

    /// Loads `model` in `dtype`, its float32 islands as `islands` says, once: a second call
    /// with the same (path, dtype, islands) returns the same handle without asking the worker
    /// (and both islands of one (path, dtype) share one model in the worker).
    pub fn load_with(
        &mut self,
        model: &Path,
        dtype: RefDtype,
        islands: Islands,
    ) -> Result<Loaded, ReferenceError> {
        let path = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
        if let Some(l) = self.loaded.get(&(path.clone(), dtype, islands)) {
            return Ok(l.clone());
        }
        let req =
            json!({"op": "load", "path": path, "dtype": dtype.name(), "islands": islands.name()});
        let f = self.call(&req, &[], 0, self.limits.load)?;
        let handle = f.u64("handle");
        let vocab = f.u64("vocab").and_then(|v| usize::try_from(v).ok());
        let (Some(id), Some(vocab)) = (handle, vocab) else {
            let msg = format!("a load answer without handle or vocab: {:?}", f.header);
            return Err(self.kill(msg));
        };
        let text = |k: &str| f.str(k).unwrap_or("unknown").to_string();
        let other_dtypes = f
            .header
            .get("other_dtypes")
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let l = Loaded {
            handle: Handle { id, vocab },
            class: text("class"),
            arch: text("arch"),
            other_dtypes,
        };
        self.loaded.insert((path, dtype, islands), l.clone());
        Ok(l)
    }

    /// The logits of every position of one forward over `ids` (no cache, eager attention):
    /// an f64 tensor of shape [ids.len(), vocab] on the CPU, whatever dtype the model runs in.
    pub fn forward(&mut self, h: Handle, ids: &[u32]) -> Result<Tensor, ReferenceError> {
        let n = ids.len();
        let payload: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        let req = json!({"op": "forward", "handle": h.id, "n": n});
        let max = (n as u64).saturating_mul(h.vocab as u64).saturating_mul(8);
        let f = self.call(&req, &payload, max, self.limits.forward(n))?;
        match logits(&f, n, h.vocab) {
            Ok(values) => Tensor::from_vec(values, (n, h.vocab), &Device::Cpu)
                .map_err(|e| worker_error(format!("cannot make the logits tensor: {e}"), "")),
            Err(msg) => Err(self.kill(msg)),
        }
    }

    /// Sends one request and awaits its answer: an error frame becomes its typed error (the
    /// worker lives on); no answer in time, garbage or the end of the stream kill it.
    fn call(
        &mut self,
        header: &serde_json::Value,
        payload: &[u8],
        max_payload: u64,
        within: Duration,
    ) -> Result<Frame, ReferenceError> {
        if let Some(why) = &self.dead {
            let msg = format!("the worker stopped earlier: {why}");
            return Err(worker_error(msg, &self.stderr.text()));
        }
        self.limit.set(max_payload);
        let sent = self
            .to_worker
            .as_ref()
            .is_some_and(|tx| tx.send(frame::request(header, payload)).is_ok());
        if !sent {
            return Err(self.kill("the worker's stdin is closed".to_string()));
        }
        self.answer(within)
    }

    /// The next frame, within `within`; an `ok: false` frame as its error.
    fn answer(&mut self, within: Duration) -> Result<Frame, ReferenceError> {
        let f = match self.frames.recv_timeout(within) {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(self.kill("the worker closed its stdout".to_string())),
            Ok(Err(garbage)) => return Err(self.kill(format!("the worker answered {garbage}"))),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.kill("the worker's stdout reader stopped".to_string()));
            }
            Err(RecvTimeoutError::Timeout) => {
                let secs = within.as_secs_f64();
                self.kill(format!("no answer within {secs} s"));
                let stderr_tail = self.stderr.text();
                return Err(ReferenceError::TimedOut { secs, stderr_tail });
            }
        };
        if f.header.get("ok").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(f);
        }
        let msg = f.str("message").unwrap_or("(no message)").to_string();
        Err(match f.str("kind") {
            Some("unsupported") => ReferenceError::Unsupported {
                arch: f.str("arch").unwrap_or("unknown").to_string(),
                msg,
            },
            Some("bad_request") => ReferenceError::BadRequest { msg },
            Some("not_installed") => {
                self.kill(msg.clone());
                not_installed(msg)
            }
            _ => worker_error(msg, &self.stderr.text()),
        })
    }

    /// Kills the worker (once), waits for it and for the end of its stderr, and returns the
    /// Worker error for `msg` with the exit status and the stderr tail.
    fn kill(&mut self, msg: String) -> ReferenceError {
        if self.dead.is_none() {
            self.to_worker = None;
            let _ = self.child.kill();
            let status = self.child.wait().map(|s| s.to_string());
            // The tail is complete once stderr ends; a grandchild holding it open must not
            // hang the caller, hence the bound.
            let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
            let status = status.unwrap_or_else(|e| format!("unknown status ({e})"));
            self.dead = Some(format!("{msg} (worker {status})"));
        }
        let why = self.dead.clone().unwrap_or(msg);
        worker_error(why, &self.stderr.text())
    }
}

impl Drop for TransformersWorker {
    /// Closes stdin (the worker exits at its end), waits a little, then kills.
    fn drop(&mut self) {
        self.to_worker = None;
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The forward answer's logits as f64, after checking its sizes against the request.
fn logits(f: &Frame, n: usize, vocab: usize) -> Result<Vec<f64>, String> {
    let (got_n, got_v) = (f.u64("n"), f.u64("vocab"));
    if got_n != Some(n as u64) || got_v != Some(vocab as u64) {
        return Err(format!(
            "logits of shape [{got_n:?}, {got_v:?}] for {n} ids and a vocabulary of {vocab}"
        ));
    }
    let size = match f.str("elem") {
        Some("f64") => 8,
        Some("f32") => 4,
        other => return Err(format!("logits of unknown element type {other:?}")),
    };
    if f.payload.len() != n * vocab * size {
        return Err(format!(
            "{} payload bytes for {n} × {vocab} logits of {size} bytes",
            f.payload.len()
        ));
    }
    Ok(if size == 8 {
        f.payload
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect()
    } else {
        f.payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
            .collect()
    })
}

fn not_installed(reason: String) -> ReferenceError {
    ReferenceError::NotInstalled {
        command: INSTALL_COMMAND.to_string(),
        reason,
    }
}

fn worker_error(msg: impl Into<String>, tail: &str) -> ReferenceError {
    ReferenceError::Worker {
        msg: msg.into(),
        stderr_tail: tail.to_string(),
    }
}

/// The thread that writes requests to the worker's stdin; dropping the sender closes it.
fn writer(mut stdin: ChildStdin) -> Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for bytes in rx {
            if stdin.write_all(&bytes).and_then(|_| stdin.flush()).is_err() {
                // The worker is gone; the reader reports it.
                return;
            }
        }
    });
    tx
}

/// The thread that reads frames from the worker's stdout until its end or the first error.
fn reader(
    stdout: impl Read + Send + 'static,
    limit: PayloadLimit,
) -> Receiver<Result<Option<Frame>, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let f = frame::read_frame(&mut r, &limit);
            let last = !matches!(f, Ok(Some(_)));
            if tx.send(f).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The thread that keeps the tail of the worker's stderr; signals when stderr ends.
fn drain(mut stderr: impl Read + Send + 'static, tail: Tail) -> Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
        }
        let _ = tx.send(());
    });
    rx
}

#[cfg(test)]
pub(super) fn tail_of(chunks: &[&[u8]]) -> String {
    let t = Tail::default();
    for c in chunks {
        t.push(c);
    }
    t.text()
}
