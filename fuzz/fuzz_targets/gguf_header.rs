//! The GGUF reader the project uses (candle's header reader behind driftsweep's pre-checks,
//! then metadata → model config and tokenizer) on arbitrary bytes: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftsweep::model::gguf::inspect_bytes(data);
});
