//! Reading a GGUF file's header, metadata and tensor infos, after [`precheck`] has rejected
//! what would make candle panic; and typed access to metadata values.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::model::error::ModelError;

/// Opens a GGUF file and reads its header; returns it with the reader and the file's size.
pub(super) fn open(path: &Path) -> Result<(Content, BufReader<File>, u64), ModelError> {
    let f = File::open(path).map_err(|e| ModelError::Io(format!("cannot open: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| ModelError::Io(format!("cannot stat: {e}")))?
        .len();
    let mut r = BufReader::new(f);
    let c = read_content(&mut r, len)?;
    Ok((c, r, len))
}

/// Reads the header, metadata and tensor infos of a GGUF stream of `len` bytes that starts at
/// the reader's position 0, after [`precheck`] has rejected what would make candle panic.
pub(super) fn read_content<R: Read + Seek>(r: &mut R, len: u64) -> Result<Content, ModelError> {
    precheck(r, len).map_err(|e| format!("not a readable GGUF file: {e}"))?;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| ModelError::Io(format!("cannot read: {e}")))?;
    Ok(Content::read(r).map_err(|e| format!("not a readable GGUF file: {e}"))?)
}

/// The key [`precheck`] looks for.
const KEY: &[u8] = b"general.alignment";
// Same caps as candle 0.11.1's reader; beyond them candle bails out with an error.
const MAX_LEN: u64 = 1 << 30;
const MAX_DEPTH: usize = 64;

/// A reader over the metadata section that skips values without keeping them.
struct W<'a, R> {
    r: &'a mut R,
    /// Bytes left after the current position.
    left: u64,
    wide: bool,
}
impl<R: Read + Seek> W<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).ok()?;
        self.left = self.left.saturating_sub(N as u64);
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn length(&mut self) -> Option<u64> {
        if self.wide {
            self.bytes::<8>().map(u64::from_le_bytes)
        } else {
            self.u32().map(u64::from)
        }
    }
    /// Skips `n` bytes by reading them (cheap through a `BufReader`, unlike a seek).
    fn skip(&mut self, n: u64) -> Option<()> {
        let done = std::io::copy(&mut (&mut *self.r).take(n), &mut std::io::sink()).ok()?;
        self.left = self.left.saturating_sub(done);
        (done == n).then_some(())
    }
    /// A string: `Some(true)` when candle will read it as `KEY`. candle drops trailing
    /// NUL bytes from strings, so `general.alignment\0\0\0` is the key too (a crash the
    /// `gguf_header` fuzz target found after the exact-match check).
    fn string_is_key(&mut self) -> Option<bool> {
        let n = self.length()?;
        if n > MAX_LEN || n > self.left {
            return None;
        }
        if n < KEY.len() as u64 {
            self.skip(n)?;
            return Some(false);
        }
        let head = self.bytes::<{ KEY.len() }>()? == KEY;
        // The rest is read in chunks, never allocated whole: it must be all NULs.
        let mut rest = n - KEY.len() as u64;
        let mut nuls = true;
        let mut buf = [0u8; 256];
        while rest > 0 {
            let k = rest.min(buf.len() as u64) as usize;
            self.r.read_exact(&mut buf[..k]).ok()?;
            self.left = self.left.saturating_sub(k as u64);
            nuls &= buf[..k].iter().all(|b| *b == 0);
            rest -= k as u64;
        }
        Some(head && nuls)
    }
    fn min_size(&self, t: u32) -> Option<u64> {
        let prefix = if self.wide { 8 } else { 4 };
        Some(match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => prefix,
            9 => 4 + prefix,
            _ => return None,
        })
    }
    /// Skips one value of type `t`; returns it when it is a candidate alignment (the
    /// integer types candle reads `general.alignment` from).
    fn value(&mut self, t: u32, depth: usize) -> Option<Option<i64>> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match t {
            0 => Some(i64::from(self.bytes::<1>()?[0])),
            1 => Some(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Some(i64::from(u16::from_le_bytes(self.bytes::<2>()?))),
            3 => Some(i64::from(i16::from_le_bytes(self.bytes::<2>()?))),
            4 => Some(i64::from(self.u32()?)),
            5 => Some(i64::from(self.u32()? as i32)),
            7 => {
                if self.bytes::<1>()?[0] > 1 {
                    return None;
                }
                None
            }
            8 => {
                self.string_is_key()?;
                None
            }
            9 => {
                let et = self.u32()?;
                let min = self.min_size(et)?;
                let n = self.length()?;
                if n > MAX_LEN || n.saturating_mul(min) > self.left {
                    return None;
                }
                if et == 9 || et == 8 {
                    for _ in 0..n {
                        self.value(et, depth + 1)?;
                    }
                } else {
                    self.skip(n * min)?;
                }
                None
            }
            t => {
                self.skip(self.min_size(t)?)?;
                None
            }
        })
    }
}

/// Walks the metadata section the way candle's `Content::read` will, without keeping any
/// value, and rejects `general.alignment = 0`: candle rounds the tensor-data offset up to a
/// multiple of it and would divide by zero (a panic, found by `fuzz/` target `gguf_header`).
/// Anything malformed that candle reports as an error itself is left to candle (`Ok`); this
/// never allocates more than a key's worth of bytes, whatever lengths the file declares.
fn precheck<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), ModelError> {
    let Some(start) = r.stream_position().ok() else {
        return Ok(());
    };
    let mut w = W {
        r,
        left: len.saturating_sub(start),
        wide: true,
    };
    let found = walk(&mut w);
    let _ = w.r.seek(SeekFrom::Start(start));
    match found {
        // candle rounds offsets up to a multiple of it: 0 divides by zero, and anything
        // not a power of two puts every tensor at a wrong offset (garbage weights).
        Some(Some(a)) if a <= 0 || !(a as u64).is_power_of_two() => {
            Err(format!("general.alignment is {a}, not a power of two").into())
        }
        _ => Ok(()),
    }
}

/// The alignment value the metadata section gives, if any (`None` when the walk stopped at
/// something candle will reject itself).
fn walk<R: Read + Seek>(w: &mut W<'_, R>) -> Option<Option<i64>> {
    {
        let magic = w.u32()?;
        if magic != 0x4655_4747 && magic != 0x4747_5546 {
            return None;
        }
        w.wide = match w.u32()? {
            1 => false,
            2 | 3 => true,
            _ => return None,
        };
        let _tensors = w.length()?;
        let kvs = w.length()?;
        if kvs > MAX_LEN || kvs.saturating_mul(if w.wide { 13 } else { 9 }) > w.left {
            return None;
        }
        let mut alignment = None;
        for _ in 0..kvs {
            let is_key = w.string_is_key()?;
            let t = w.u32()?;
            let v = w.value(t, 0)?;
            if is_key {
                alignment = v;
            }
        }
        Some(alignment)
    }
}

/// The metadata value of `key`.
pub(crate) fn get<'a>(c: &'a Content, key: &str) -> Result<&'a Value, ModelError> {
    c.metadata
        .get(key)
        .ok_or_else(|| format!("metadata key `{key}` is missing").into())
}

/// The metadata value of `key` as a u32.
pub(crate) fn get_u32(c: &Content, key: &str) -> Result<u32, ModelError> {
    Ok(get(c, key)?
        .to_u32()
        .map_err(|e| format!("metadata key `{key}`: {e}"))?)
}

/// The metadata value of `key` as an f32.
pub(crate) fn get_f32(c: &Content, key: &str) -> Result<f32, ModelError> {
    Ok(get(c, key)?
        .to_f32()
        .map_err(|e| format!("metadata key `{key}`: {e}"))?)
}

/// The metadata value of `key` as a list of strings.
pub(crate) fn strings(c: &Content, key: &str) -> Result<Vec<String>, ModelError> {
    get(c, key)?
        .to_vec()
        .map_err(|e| format!("metadata key `{key}`: {e}"))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| format!("metadata key `{key}`: {e}").into())
        })
        .collect()
}
