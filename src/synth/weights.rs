//! Deterministic weights, made on request: a [`Recorder`] is a `VarBuilder` backend that
//! answers every tensor a model asks for with values drawn from (seed, tensor name), and
//! keeps what it handed out, so that building a model once yields its checkpoint.

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sha2::{Digest, Sha256};

/// Spread of a norm's weights around their initial value: trained norms are not all ones,
/// and a norm applied as `w` where the checkpoint means `1 + w` must show.
const NORM_SPREAD: f32 = 0.1;
/// Spread of biases (trained biases are small, not zero).
const BIAS_SPREAD: f32 = 0.02;

/// Spread of the logits (their std across the vocabulary) that the output head is scaled
/// to: trained models have about 2–4, and at 3 the synthetic models' median top-1
/// probability lands between 0.1 and 0.5 as theirs do (measured: `synth::tests`). At the
/// unit scale of the other projections the logits had std 1.0 and a top-1 probability of
/// 0.03–0.07, nearly uniform, where a drift in the logits would barely move a softmax.
/// Measured at 3 (default sizes, vocabulary 256, positions 4/12/24/48): llama std 3.05–3.25,
/// top-1 0.22–0.94 (median 0.49); llama tied, vocabulary 2048, width 128: std 2.93–3.10,
/// top-1 0.16–0.48; mistral 2.73–3.22, 0.14–0.39; qwen2 2.92–3.18, 0.22–0.40 (tied: 0.16–0.41);
/// gemma3 (tied, post-norm gain 6) 2.89–3.14, 0.09–0.43.
pub const LOGIT_STD: f32 = 3.0;

/// Gain of the norms after a layer's attention and MLP, where a model has them (Gemma 2/3's
/// `post_*_layernorm`, stored as `w` and applied as `1 + w`). Gemma scales its embedding by
/// √hidden and ties its head, so with unit post-norms the token's own embedding dominated
/// the last hidden state and the head put 0.9999 on the input token at every position;
/// trained Gemma post-norm weights are large for the same reason.
pub const POST_NORM_GAIN: f32 = 6.0;

/// A norm after attention or after the MLP (Gemma's names), stored as `w` for `1 + w`.
fn is_post_norm(name: &str) -> bool {
    name.contains("post_feedforward_layernorm.") || name.contains("post_attention_layernorm.")
}

/// The tensor is an output head (`lm_head`, ChatGLM's `output_layer`, GGUF's `output`).
fn is_head(name: &str) -> bool {
    name.starts_with("lm_head.") || name.contains("output_layer.") || name == "output.weight"
}

/// The tensor is a token embedding: candle's `embedding` hints N(0, 1); the names cover the
/// modules that read it with a plain `get`.
fn is_embedding(name: &str, hint: Init) -> bool {
    matches!(hint, Init::Randn { mean, stdev } if mean == 0.0 && stdev == 1.0)
        || [
            "embed_tokens.",
            "wte.",
            "tok_embeddings.",
            "word_embeddings.",
            "embedding.",
        ]
        .iter()
        .any(|n| name.contains(n))
}

/// The values of tensor `name` of shape `dims`, f32, from `seed` and the module's `hint`.
/// Matrices are N(0, 1/fan_in) (unit-variance activations through every projection, as a
/// trained model keeps them); the output head and the token embedding (a tied head) are
/// scaled so that unit-variance hidden states give logits of std [`LOGIT_STD`]; vectors
/// hinted constant (norm weights, biases) are that constant plus a small spread.
pub fn values(seed: u64, name: &str, dims: &[usize], hint: Init) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    let mut rng = ChaCha8Rng::from_seed(key);
    let (mean, std) = match (hint, dims.len()) {
        (Init::Const(c), 1) if name.ends_with("bias") => (c as f32, BIAS_SPREAD),
        (Init::Const(c), 1) if c == 0.0 && is_post_norm(name) => {
            (POST_NORM_GAIN - 1.0, NORM_SPREAD)
        }
        (Init::Const(c), 1) => (c as f32, NORM_SPREAD),
        // [vocab, hidden] either way: a row is one token's vector.
        (_, 2) if is_head(name) || is_embedding(name, hint) => {
            (0.0, LOGIT_STD / (dims[1].max(1) as f32).sqrt())
        }
        (Init::Randn { mean, stdev }, _) => (mean as f32, stdev as f32),
        _ => {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            (0.0, 1.0 / (fan_in as f32).sqrt())
        }
    };
    let normal = Normal::new(mean, std.max(f32::MIN_POSITIVE)).expect("finite spread");
    (0..n).map(|_| normal.sample(&mut rng)).collect()
}

/// A `VarBuilder` backend that makes every tensor asked for and keeps it.
pub struct Recorder {
    seed: u64,
    /// Names reported absent to `contains_tensor` (an untied head's `lm_head.weight` is
    /// present; a tied one's is not).
    absent: Vec<String>,
    made: Mutex<BTreeMap<String, Tensor>>,
}

impl Recorder {
    /// A recorder drawing from `seed`; `absent` names the tensors the checkpoint lacks.
    pub fn new(seed: u64, absent: Vec<String>) -> Self {
        Recorder {
            seed,
            absent,
            made: Mutex::new(BTreeMap::new()),
        }
    }
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut made = self.made.lock().expect("the recorder is not poisoned");
        // A tensor asked for twice (a tied head) is the same tensor.
        if let Some(t) = made.get(name) {
            if t.shape() != &s {
                candle_core::bail!("{name} asked for as {s:?} and as {:?}", t.shape());
            }
            return t.to_dtype(dtype)?.to_device(dev);
        }
        let t = Tensor::from_vec(values(self.seed, name, s.dims(), h), s, &Device::Cpu)?;
        made.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let made = self.made.lock().expect("the recorder is not poisoned");
        match made.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("{name} was asked for without a shape before it was made"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        !self.absent.iter().any(|a| a == name)
    }
}

/// Builds a model with weights made by a [`Recorder`] and returns every tensor it asked for
/// (f32, CPU), by name: the model's checkpoint.
pub fn record<T>(
    seed: u64,
    absent: Vec<String>,
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<T>,
) -> candle_core::Result<BTreeMap<String, Tensor>> {
    let rec = std::sync::Arc::new(Recorder::new(seed, absent));
    let backend: Box<dyn SimpleBackend> = Box::new(Shared(rec.clone()));
    let vb = VarBuilder::from_backend(backend, DType::F32, Device::Cpu);
    build(vb)?;
    let made = rec.made.lock().expect("the recorder is not poisoned");
    Ok(made.clone())
}

/// The recorder behind an `Arc`, so that its tensors outlive the builder.
struct Shared(std::sync::Arc<Recorder>);

impl SimpleBackend for Shared {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_and_seed_give_the_same_values_and_others_do_not() {
        let hint = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let a = values(0, "model.layers.0.mlp.up_proj.weight", &[8, 4], hint);
        assert_eq!(
            a,
            values(0, "model.layers.0.mlp.up_proj.weight", &[8, 4], hint)
        );
        assert_ne!(
            a,
            values(1, "model.layers.0.mlp.up_proj.weight", &[8, 4], hint)
        );
        assert_ne!(
            a,
            values(0, "model.layers.1.mlp.up_proj.weight", &[8, 4], hint)
        );
        let norm = values(0, "model.norm.weight", &[4096], Init::Const(1.0));
        let mean = norm.iter().sum::<f32>() / norm.len() as f32;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
    }

    #[test]
    fn a_model_built_on_the_recorder_yields_its_checkpoint() {
        let made = record(7, vec![], |vb| {
            let a = candle_nn::linear(4, 3, vb.pp("proj"))?;
            let n = candle_nn::rms_norm(4, 1e-6, vb.pp("norm"))?;
            Ok((a, n))
        })
        .unwrap();
        let names: Vec<&str> = made.keys().map(String::as_str).collect();
        assert_eq!(names, ["norm.weight", "proj.bias", "proj.weight"]);
        assert_eq!(made["proj.weight"].dims(), [3, 4]);
    }
}
