//! The model-header checks (config.json against the safetensors tensors: sizes positive and
//! bounded, every block and shape present) on arbitrary bytes: the input is a config.json,
//! a NUL byte, then a safetensors file. Errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = driftsweep::model::hf_dir::check_header_bytes(config, rest);
});
