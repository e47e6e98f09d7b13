//! Which path the run under test takes: the sweep axis `path`. The reference run is always the
//! one-shot prefill of the sequence alone; the run under test computes the same span logits
//! the way a serving engine may (docs/design.md, "Serving paths"):
//!
//! - `decode`: token by token through the KV cache (the original pair);
//! - `chunked:C`: the sequence enters in chunks of C tokens, the cache carrying the earlier
//!   chunks (vLLM's and SGLang's chunked prefill, llama.cpp's `n_batch`); every chunk's rows
//!   are kept. C = 1 is decode; C ≥ P + S is prefill;
//! - `batched:B`: token by token inside a batch of B sequences of the same length (the
//!   sequence of interest is row 0; the others are seeded random ids, so no padding exists);
//! - `batched_prefill:B`: one forward over B sequences of the same length.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The path of a pair's run under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunPath {
    /// Token by token with a KV cache.
    #[default]
    Decode,
    /// Chunks of this many tokens, each at the cache's offset.
    Chunked(usize),
    /// Token by token inside a batch of this many sequences.
    Batched(usize),
    /// One forward over a batch of this many sequences.
    BatchedPrefill(usize),
}

impl RunPath {
    /// What a size of this path is called in a sentence: "batch 4", "chunk 8", "decode".
    pub fn sentence_name(self) -> String {
        match self {
            RunPath::Decode => "decode".into(),
            RunPath::Chunked(c) => format!("chunk {c}"),
            RunPath::Batched(b) => format!("batch {b}"),
            RunPath::BatchedPrefill(b) => format!("batched prefill {b}"),
        }
    }

    /// Tokens this path feeds through the model for a prompt of `p` tokens and a span of `s`:
    /// `cached` when its prefix goes through a cache (the prompt + span, plus the span again
    /// for kv_aligned), `by_prefix` when the engine returns the last row only and every
    /// compared position costs one forward of its prefix; `every_row` says which.
    pub fn tokens_fed(self, p: usize, s: usize, cached: usize, every_row: bool) -> usize {
        let by_prefix = s * p + s * (s + 1) / 2;
        match self {
            RunPath::Decode => cached,
            RunPath::Chunked(_) if every_row => cached,
            RunPath::Chunked(_) => by_prefix,
            RunPath::Batched(b) => b * cached,
            RunPath::BatchedPrefill(b) if every_row => b * (p + s),
            RunPath::BatchedPrefill(b) => b * by_prefix,
        }
    }

    /// Whether this is the default (ids of decode pairs carry no path part, so that they stay
    /// what they were before paths existed).
    pub fn is_default(&self) -> bool {
        *self == RunPath::Decode
    }

    /// The id part: `chunk8`, `batch4`, `bprefill4` (none for decode).
    pub fn id_part(&self) -> Option<String> {
        match self {
            RunPath::Decode => None,
            RunPath::Chunked(c) => Some(format!("chunk{c}")),
            RunPath::Batched(b) => Some(format!("batch{b}")),
            RunPath::BatchedPrefill(b) => Some(format!("bprefill{b}")),
        }
    }

    /// The name of the run under test, as in run ids (`….decode`, `….chunked`).
    pub fn run_name(&self) -> &'static str {
        self.kind()
    }

    /// The path without its size: `decode`, `chunked`, `batched`, `batched_prefill`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunPath::Decode => "decode",
            RunPath::Chunked(_) => "chunked",
            RunPath::Batched(_) => "batched",
            RunPath::BatchedPrefill(_) => "batched_prefill",
        }
    }

    /// The chunk or batch size (none for decode).
    pub fn size(&self) -> Option<usize> {
        match *self {
            RunPath::Decode => None,
            RunPath::Chunked(n) | RunPath::Batched(n) | RunPath::BatchedPrefill(n) => Some(n),
        }
    }

    /// Sequences in one forward: B for the batched paths, else 1.
    pub fn batch(&self) -> usize {
        match *self {
            RunPath::Batched(b) | RunPath::BatchedPrefill(b) => b,
            _ => 1,
        }
    }

    /// Whether kv_aligned means anything here: every path that carries a cache from a prompt
    /// into a span. Batched prefill carries none.
    pub fn has_kv_aligned(&self) -> bool {
        !matches!(self, RunPath::BatchedPrefill(_))
    }
}

/// Where a kv_aligned run's prompt cache comes from (docs/design.md, "kv_aligned").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSource {
    /// Prefill's own forward over prompt + span, its cache cut back to the prompt: the span
    /// starts from the very cache prefill computed.
    CutBack,
    /// One forward over the prompt alone (prompt-only prefill), for engines whose cache cannot
    /// be cut back: the prompt still goes through one forward pass, at the prompt's matrix
    /// height rather than prefill's.
    PromptPrefill,
}

impl CacheSource {
    /// The spelling in records and reports: `cut_back`, `prompt_prefill`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSource::CutBack => "cut_back",
            CacheSource::PromptPrefill => "prompt_prefill",
        }
    }
}

impl fmt::Display for CacheSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RunPath {
    /// The prompt cache a run on this path builds for `kv_aligned` (none when kv_aligned is
    /// false or means nothing here) on a model that returns every row (`every_row`) and can
    /// cut its cache back (`cache_prefix`). A model that returns only the last row computes
    /// its chunked rows one prefix at a time, so it starts each prefix from the prompt alone.
    /// The plan (to record it) and the run (to do it) both ask here, so they agree.
    pub fn cache_source(
        self,
        kv_aligned: bool,
        every_row: bool,
        cache_prefix: bool,
    ) -> Option<CacheSource> {
        if !kv_aligned || !self.has_kv_aligned() {
            return None;
        }
        let by_prefix = matches!(self, RunPath::Chunked(_)) && !every_row;
        Some(if cache_prefix && !by_prefix {
            CacheSource::CutBack
        } else {
            CacheSource::PromptPrefill
        })
    }
}

impl fmt::Display for RunPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.size() {
            None => f.write_str(self.kind()),
            Some(n) => write!(f, "{}:{n}", self.kind()),
        }
    }
}

/// Why a path does not parse; its text says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParsePathError(String);

impl std::str::FromStr for RunPath {
    type Err = ParsePathError;
    fn from_str(s: &str) -> Result<Self, ParsePathError> {
        let usage = "use decode, chunked:C, batched:B or batched_prefill:B (C, B ≥ 1)";
        let unknown = || ParsePathError(format!("unknown path `{s}`: {usage}"));
        if s == "decode" {
            return Ok(RunPath::Decode);
        }
        let Some((kind, n)) = s.split_once(':') else {
            return Err(unknown());
        };
        let n = match n.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(ParsePathError(format!(
                    "`{s}`: the size must be a whole number ≥ 1; {usage}"
                )));
            }
        };
        match kind.trim() {
            "chunked" => Ok(RunPath::Chunked(n)),
            "batched" => Ok(RunPath::Batched(n)),
            "batched_prefill" => Ok(RunPath::BatchedPrefill(n)),
            _ => Err(unknown()),
        }
    }
}

impl Serialize for RunPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_their_spelling() {
        for p in [
            RunPath::Decode,
            RunPath::Chunked(8),
            RunPath::Batched(1),
            RunPath::BatchedPrefill(9),
        ] {
            assert_eq!(p.to_string().parse::<RunPath>().unwrap(), p);
            let yaml = serde_yaml::to_string(&p).unwrap();
            assert_eq!(serde_yaml::from_str::<RunPath>(&yaml).unwrap(), p);
        }
        assert_eq!(RunPath::Chunked(8).id_part().as_deref(), Some("chunk8"));
        assert_eq!(RunPath::Decode.id_part(), None);
    }

    #[test]
    fn bad_spellings_say_what_is_accepted() {
        for bad in [
            "chunk:8",
            "chunked",
            "chunked:0",
            "batched:-1",
            "batched:x",
            "",
        ] {
            let e = bad.parse::<RunPath>().unwrap_err();
            assert!(e.to_string().contains("decode, chunked:C"), "{bad}: {e}");
        }
    }
}
