//! The names of the family table: architectures, families and candle-transformers' modules.

/// A model's architecture, as report.json names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama (and the built-in model).
    Llama,
    /// Mistral: Llama with a sliding window.
    Mistral,
    /// Qwen2: Llama with Q/K/V biases.
    Qwen2,
    /// Qwen3: Llama with per-head Q/K norms and an explicit head width.
    Qwen3,
    /// Gemma 3 (text).
    Gemma3,
    // Group A of candle-transformers' dense modules without an own decoder here.
    /// Mixtral: Mistral with a mixture of experts.
    Mixtral,
    /// Gemma (the first).
    Gemma,
    /// Gemma 2: soft-capped attention and logits, local layers.
    Gemma2,
    /// Qwen2-MoE: Qwen2 with experts and a gated shared expert.
    Qwen2Moe,
    /// Qwen3-MoE: Qwen3 with experts.
    Qwen3Moe,
    /// Yi (01.AI): Llama's recipe.
    Yi,
    /// Helium (Kyutai).
    Helium,
    /// SmolLM3: Llama with RoPE skipped on every n-th layer.
    Smollm3,
    /// Granite (IBM): Llama with scaling multipliers.
    Granite,
    // candle-transformers dense modules, group B (issue 32): no own decoder.
    /// Phi (1, 1.5, 2): parallel attention and MLP, LayerNorm with biases, partial rotary.
    Phi,
    /// Phi-3: fused QKV and gate/up projections.
    Phi3,
    /// StarCoder2: LayerNorm and biases, an optional sliding window.
    Starcoder2,
    /// StableLM (2): LayerNorm, partial rotary, optional Q/K/V biases.
    StableLm,
    /// OLMo: non-parametric LayerNorm, optional QKV clipping.
    Olmo,
    /// OLMo 2: post-norms and whole-width Q/K RMSNorms.
    Olmo2,
    /// Falcon (7B recipe): multi-query attention, parallel attention and MLP.
    Falcon,
    /// GLM-4-0414 (`Glm4ForCausalLM`): sandwich norms, partial rotary.
    Glm4,
    /// ChatGLM2/3 and GLM-4-9B (remote code, `model_type` `chatglm`), run by candle's
    /// `glm4` module, which reads `rope_ratio`.
    Chatglm,
    /// The same recipe run by candle's `chatglm` module (which has no `rope_ratio`): a name of
    /// driftsweep's, since both modules serve `model_type` `chatglm`.
    Chatglm3,
    /// DeepSeek-V2: multi-head latent attention and a mixture of experts.
    DeepseekV2,
    /// MPT: ALiBi, no biases.
    Mpt,
    /// Persimmon: LayerNorm, Q/K LayerNorms, partial rotary, squared ReLU.
    Persimmon,
    /// LFM2: short convolutions and attention layers.
    Lfm2,
    // candle-transformers recurrent modules (issue 32's stretch): no own decoder.
    /// Mamba (mamba_ssm's checkpoint layout, which candle reads).
    Mamba,
    /// Mamba-2.
    Mamba2,
    /// RWKV v5 (Eagle).
    Rwkv5,
    /// RWKV v6 (Finch).
    Rwkv6,
    /// RWKV v7 (Goose).
    Rwkv7,
    /// RecurrentGemma (Griffin): recurrent blocks and local attention.
    RecurrentGemma,
    /// A model given from Rust ([`super::ModelInfo::custom`]).
    Custom,
}

/// Which own decoder computes an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// [`llama::Decoder`].
    Llama,
    /// [`gemma3::Model`].
    Gemma3,
    /// None: the user's model computes itself.
    Custom,
    /// None: only candle-transformers runs it ([`Family::Foreign`]).
    Foreign,
}

/// A candle-transformers module that runs an architecture (engine `candle-transformers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtModule {
    /// `quantized_llama`, on GGUF blocks.
    QuantizedLlama,
    /// `quantized_qwen2`, on GGUF blocks.
    QuantizedQwen2,
    /// `quantized_qwen3`, on GGUF blocks.
    QuantizedQwen3,
    /// `quantized_gemma3`, on GGUF blocks.
    QuantizedGemma3,
    /// `llama`, on dense weights.
    Llama,
    /// `mistral`, on dense weights.
    Mistral,
    /// `qwen2`, on dense weights.
    Qwen2,
    /// `qwen3`, on dense weights.
    Qwen3,
    /// `gemma3`, on dense weights.
    Gemma3,
    // Group A of the dense modules (src/model/candle_transformers/dense_a.rs).
    /// `mixtral`, on dense weights.
    Mixtral,
    /// `gemma`, on dense weights.
    Gemma,
    /// `gemma2`, on dense weights.
    Gemma2,
    /// `qwen2_moe`, on dense weights.
    Qwen2Moe,
    /// `qwen3_moe`, on dense weights.
    Qwen3Moe,
    /// `yi`, on dense weights (it cannot be built from a config.json).
    Yi,
    /// `helium`, on dense weights.
    Helium,
    /// `smol::smollm3`, on dense weights.
    Smollm3,
    /// `granite`, on dense weights.
    Granite,
    // Group B (issue 32), on dense weights.
    /// `phi`.
    Phi,
    /// `phi3`.
    Phi3,
    /// `starcoder2`.
    Starcoder2,
    /// `stable_lm`.
    StableLm,
    /// `olmo`.
    Olmo,
    /// `olmo2`.
    Olmo2,
    /// `falcon`.
    Falcon,
    /// `glm4` (the ChatGLM-style GLM-4-9B).
    Glm4,
    /// `glm4_new` (GLM-4-0414).
    Glm4New,
    /// `chatglm`.
    Chatglm,
    /// `deepseek2`.
    Deepseek2,
    /// `mpt`.
    Mpt,
    /// `persimmon`.
    Persimmon,
    /// `lfm2`.
    Lfm2,
    // Recurrent (issue 32's stretch), on dense weights.
    /// `mamba`.
    Mamba,
    /// `mamba2`.
    Mamba2,
    /// `rwkv_v5`.
    RwkvV5,
    /// `rwkv_v6`.
    RwkvV6,
    /// `rwkv_v7`.
    RwkvV7,
    /// `recurrent_gemma`.
    RecurrentGemma,
    // Quantized modules (issue 32), on GGUF blocks.
    /// `quantized_mistral`: reads Hugging Face tensor names and a Mistral config, which
    /// driftsweep takes from a llama.cpp file of architecture `llama`.
    QuantizedMistral,
    /// `quantized_phi` (Phi-2, `general.architecture` `phi2`).
    QuantizedPhi,
    /// `quantized_phi3`.
    QuantizedPhi3,
    /// `quantized_qwen3_moe` (`qwen3moe`).
    QuantizedQwen3Moe,
    /// `quantized_glm4`.
    QuantizedGlm4,
    /// `quantized_stable_lm`: reads Hugging Face tensor names and a StableLM config, which
    /// driftsweep takes from a llama.cpp file of architecture `stablelm`.
    QuantizedStableLm,
    /// `quantized_lfm2`.
    QuantizedLfm2,
}

impl CtModule {
    /// The module's name in `candle_transformers::models`.
    pub fn as_str(self) -> &'static str {
        match self {
            CtModule::QuantizedLlama => "quantized_llama",
            CtModule::QuantizedQwen2 => "quantized_qwen2",
            CtModule::QuantizedQwen3 => "quantized_qwen3",
            CtModule::QuantizedGemma3 => "quantized_gemma3",
            CtModule::Llama => "llama",
            CtModule::Mistral => "mistral",
            CtModule::Qwen2 => "qwen2",
            CtModule::Qwen3 => "qwen3",
            CtModule::Gemma3 => "gemma3",
            CtModule::Mixtral => "mixtral",
            CtModule::Gemma => "gemma",
            CtModule::Gemma2 => "gemma2",
            CtModule::Qwen2Moe => "qwen2_moe",
            CtModule::Qwen3Moe => "qwen3_moe",
            CtModule::Yi => "yi",
            CtModule::Helium => "helium",
            CtModule::Smollm3 => "smol::smollm3",
            CtModule::Granite => "granite",
            CtModule::Phi => "phi",
            CtModule::Phi3 => "phi3",
            CtModule::Starcoder2 => "starcoder2",
            CtModule::StableLm => "stable_lm",
            CtModule::Olmo => "olmo",
            CtModule::Olmo2 => "olmo2",
            CtModule::Falcon => "falcon",
            CtModule::Glm4 => "glm4",
            CtModule::Glm4New => "glm4_new",
            CtModule::Chatglm => "chatglm",
            CtModule::Deepseek2 => "deepseek2",
            CtModule::Mpt => "mpt",
            CtModule::Persimmon => "persimmon",
            CtModule::Lfm2 => "lfm2",
            CtModule::Mamba => "mamba",
            CtModule::Mamba2 => "mamba2",
            CtModule::RwkvV5 => "rwkv_v5",
            CtModule::RwkvV6 => "rwkv_v6",
            CtModule::RwkvV7 => "rwkv_v7",
            CtModule::RecurrentGemma => "recurrent_gemma",
            CtModule::QuantizedMistral => "quantized_mistral",
            CtModule::QuantizedPhi => "quantized_phi",
            CtModule::QuantizedPhi3 => "quantized_phi3",
            CtModule::QuantizedQwen3Moe => "quantized_qwen3_moe",
            CtModule::QuantizedGlm4 => "quantized_glm4",
            CtModule::QuantizedStableLm => "quantized_stable_lm",
            CtModule::QuantizedLfm2 => "quantized_lfm2",
        }
    }
}

/// The weights a candle-transformers module reads, as driftsweep holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtWeights {
    /// A GGUF file's blocks as they are.
    QuantizedGguf,
    /// The built-in model's or a GGUF file's dequantized tensors under Hugging Face names.
    Dequantized,
    /// A Hugging Face directory's safetensors.
    Safetensors,
}
