//! The safetensors header check (driftsweep's, then the safetensors crate's parse) on
//! arbitrary bytes: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftsweep::model::hf_dir::check_safetensors_bytes(data);
});
