//! `driftsweep generate`: greedy continuation of a prompt, to see that a model loads and
//! answers sensibly before sweeping it.

use std::time::Instant;

use driftsweep::dtype::RunDtype;
use driftsweep::{Error, exit, model, tokens};

/// Options of `driftsweep generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model source (`builtin:tiny-llama`, a `.gguf` file).
    model: String,
    /// The prompt text; special tokens such as `<|im_start|>` are recognized.
    prompt: String,
    /// Most tokens to generate (stops after end-of-sequence).
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Run dtype.
    #[arg(long, value_enum, default_value_t = RunDtype::F32)]
    dtype: RunDtype,
}

/// Loads the model, continues the prompt and prints the text (timings on stderr).
pub fn generate(a: GenerateArgs) -> Result<i32, Error> {
    let (model, dtype) = (&a.model, a.dtype);
    let info = model::ModelInfo::inspect(model)?;
    let start = Instant::now();
    let m = info.load_own(
        driftsweep::engine::WeightFormat::Dequantized,
        dtype,
        &candle_core::Device::Cpu,
    )?;
    let load_s = start.elapsed().as_secs_f64();
    let ids = info.encode(&a.prompt.replace("\\n", "\n"))?;
    let start = Instant::now();
    let out = tokens::generate(&info, m.as_ref(), &ids, a.max_tokens)?;
    let gen_s = start.elapsed().as_secs_f64();
    let text = info
        .tokenizer
        .decode(&out, false)
        .map_err(|e| Error::model(model, format!("decoding: {e}")))?;
    outln!("{text}");
    eprintln!(
        "{model} ({}, {dtype}): loaded in {load_s:.2} s; prompt {} tokens; {} tokens in {gen_s:.2} s ({:.1} tokens/s)",
        info.architecture,
        ids.len(),
        out.len(),
        out.len() as f64 / gen_s.max(1e-9)
    );
    Ok(exit::PASS)
}
