//! The sweep-file parser (YAML → validated config) on arbitrary text: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // A path that does not exist: prompt files and templates named by the input fail to
        // resolve instead of reading the fuzzer's working directory.
        let _ = driftsweep::config::parse(
            std::path::Path::new("/nonexistent-fuzz-dir/sweep.yaml"),
            text,
        );
    }
});
