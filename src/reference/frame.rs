//! The worker protocol's frames: one JSON header line, then the raw payload its `bytes`
//! field announces. Reading checks every size before it trusts it: a header line is at most
//! [`MAX_HEADER`] bytes, and a payload at most what the pending request can produce, so
//! garbage on the pipe is an error and never an allocation of whatever it claims.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

/// The longest header line read.
pub const MAX_HEADER: u64 = 1 << 20;

/// One frame: its header object and its payload (empty when the header announces none).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The header.
    pub header: Map<String, Value>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A string field of the header.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    /// An unsigned field of the header.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.header.get(key).and_then(Value::as_u64)
    }
}

/// The largest payload the reader accepts now: set by the client before each request.
#[derive(Debug, Clone, Default)]
pub struct PayloadLimit(Arc<AtomicU64>);

impl PayloadLimit {
    /// Accept payloads of at most `bytes` from now on.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reads one frame. `Ok(None)` at the end of the stream before a header; an error (in words)
/// for a header that is too long, cut, not a JSON object, or announcing a payload over
/// `limit`, and for a payload cut short.
pub fn read_frame(r: &mut impl BufRead, limit: &PayloadLimit) -> Result<Option<Frame>, String> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_HEADER + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read a header: {e}"))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        let what = if line.len() as u64 > MAX_HEADER {
            format!("a header line longer than {MAX_HEADER} bytes")
        } else {
            "a header line cut by the end of the stream".to_string()
        };
        return Err(format!("{what}: {}", snippet(&line)));
    }
    let header = match serde_json::from_slice::<Value>(&line) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(format!(
                "a header that is not a JSON object: {}",
                snippet(&line)
            ));
        }
    };
    let bytes = match header.get("bytes") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("a header whose `bytes` is not a count: {v}"))?,
    };
    let max = limit.get();
    if bytes > max {
        return Err(format!(
            "a header announcing {bytes} payload bytes, more than the {max} the request can produce"
        ));
    }
    let mut payload = Vec::with_capacity(bytes.min(1 << 26) as usize);
    r.by_ref()
        .take(bytes)
        .read_to_end(&mut payload)
        .map_err(|e| format!("cannot read a payload: {e}"))?;
    if payload.len() as u64 != bytes {
        return Err(format!(
            "a payload cut short: {} of {bytes} bytes",
            payload.len()
        ));
    }
    Ok(Some(Frame { header, payload }))
}

/// The start of a garbage line, printable, for an error message.
fn snippet(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(200)]);
    format!("{:?}", text.trim_end())
}

/// A request: its header line, then `payload`.
pub fn request(header: &Value, payload: &[u8]) -> Vec<u8> {
    let mut out = header.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}
