//! The family table: the names of architectures, families and candle-transformers' modules,
//! and for each architecture its row (its names in files, the family that computes it and
//! candle-transformers' module per weight format). A new candle-transformers module is a
//! `CtModule` variant and its cell here, plus its build arm in its group's file
//! (`src/model/candle_transformers/`).

use candle_core::quantized::gguf_file::Content;

use super::sizes::{ForeignConfig, Sizes};
use crate::model::custom::CustomLoader;
use crate::model::error::ModelError;
use crate::model::gemma3;
use crate::model::gguf::layout::Layout;
use crate::model::header::Expected;
use crate::model::layers::Source;
use crate::model::llama;
use crate::model::under_test::ModelUnderTest;

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
    /// A model given from Rust ([`super::ModelInfo::from_custom`]).
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

/// One architecture's row of the table.
pub(super) struct Row {
    pub(super) arch: Architecture,
    /// The name in report.json, in `general.architecture` and in `model_type`.
    pub(super) name: &'static str,
    /// The `architectures` class of a `config.json`, when the own decoder reads the
    /// architecture from Hugging Face directories.
    pub(super) hf_class: Option<&'static str>,
    /// The own decoder reads the architecture from GGUF files.
    pub(super) gguf: bool,
    /// llama.cpp's `general.architecture` for it, if llama.cpp converts it (Mistral's files
    /// are `llama`'s).
    pub(super) gguf_name: Option<&'static str>,
    pub(super) family: FamilyKind,
    /// What a Llama-family architecture changes in the Llama recipe (default elsewhere).
    pub(super) llama: llama::Variant,
    /// candle-transformers' module per [`CtWeights`], in its order.
    pub(super) ct: [Option<CtModule>; 3],
}

/// The table: one architecture per row (kept one row per line).
#[rustfmt::skip]
pub(super) const TABLE: &[Row] = &[
    Row {
        arch: Architecture::Llama,
        name: "llama",
        hf_class: Some("LlamaForCausalLM"),
        gguf: true,
        gguf_name: Some("llama"),
        family: FamilyKind::Llama,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: false,
            qkv_bias: false,
            qk_norm: false,
        },
        ct: [
            Some(CtModule::QuantizedLlama),
            Some(CtModule::Llama),
            Some(CtModule::Llama),
        ],
    },
    Row {
        arch: Architecture::Mistral,
        name: "mistral",
        hf_class: Some("MistralForCausalLM"),
        gguf: false,
        gguf_name: Some("llama"),
        family: FamilyKind::Llama,
        llama: llama::Variant {
            always_slides: true,
            slides_when_enabled: false,
            qkv_bias: false,
            qk_norm: false,
        },
        ct: [
            Some(CtModule::QuantizedMistral),
            None,
            Some(CtModule::Mistral),
        ],
    },
    Row {
        arch: Architecture::Qwen2,
        name: "qwen2",
        hf_class: Some("Qwen2ForCausalLM"),
        gguf: false,
        gguf_name: Some("qwen2"),
        family: FamilyKind::Llama,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: true,
            qkv_bias: true,
            qk_norm: false,
        },
        ct: [Some(CtModule::QuantizedQwen2), None, Some(CtModule::Qwen2)],
    },
    Row {
        arch: Architecture::Qwen3,
        name: "qwen3",
        hf_class: Some("Qwen3ForCausalLM"),
        gguf: false,
        gguf_name: Some("qwen3"),
        family: FamilyKind::Llama,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: true,
            qkv_bias: false,
            qk_norm: true,
        },
        ct: [Some(CtModule::QuantizedQwen3), None, Some(CtModule::Qwen3)],
    },
    Row {
        arch: Architecture::Gemma3,
        name: "gemma3",
        // A text-only checkpoint's class (its model_type is `gemma3_text`); the own decoder
        // reads GGUF files only, so such a directory runs in candle-transformers.
        hf_class: Some("Gemma3ForCausalLM"),
        gguf: true,
        gguf_name: Some("gemma3"),
        family: FamilyKind::Gemma3,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: false,
            qkv_bias: false,
            qk_norm: false,
        },
        ct: [
            Some(CtModule::QuantizedGemma3),
            None,
            Some(CtModule::Gemma3),
        ],
    },
    // Group A of candle-transformers' dense modules (foreign: no own decoder).
    foreign(Architecture::Mixtral, "mixtral", "MixtralForCausalLM", CtModule::Mixtral),
    foreign(Architecture::Gemma, "gemma", "GemmaForCausalLM", CtModule::Gemma),
    foreign(Architecture::Gemma2, "gemma2", "Gemma2ForCausalLM", CtModule::Gemma2),
    foreign(Architecture::Qwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM", CtModule::Qwen2Moe),
    foreign_q(Architecture::Qwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM", CtModule::Qwen3Moe, "qwen3moe", CtModule::QuantizedQwen3Moe),
    foreign(Architecture::Yi, "yi", "YiForCausalLM", CtModule::Yi),
    foreign(Architecture::Helium, "helium", "HeliumForCausalLM", CtModule::Helium),
    foreign(Architecture::Smollm3, "smollm3", "SmolLM3ForCausalLM", CtModule::Smollm3),
    foreign(Architecture::Granite, "granite", "GraniteForCausalLM", CtModule::Granite),
    Row {
        arch: Architecture::Custom,
        name: "custom",
        hf_class: None,
        gguf: false,
        gguf_name: None,
        family: FamilyKind::Custom,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: false,
            qkv_bias: false,
            qk_norm: false,
        },
        ct: [None, None, None],
    },
    // candle-transformers dense modules, group B (issue 32).
    foreign_q(Architecture::Phi, "phi", "PhiForCausalLM", CtModule::Phi, "phi2", CtModule::QuantizedPhi),
    foreign_q(Architecture::Phi3, "phi3", "Phi3ForCausalLM", CtModule::Phi3, "phi3", CtModule::QuantizedPhi3),
    foreign(Architecture::Starcoder2, "starcoder2", "Starcoder2ForCausalLM", CtModule::Starcoder2),
    foreign_q(Architecture::StableLm, "stablelm", "StableLmForCausalLM", CtModule::StableLm, "stablelm", CtModule::QuantizedStableLm),
    foreign(Architecture::Olmo, "olmo", "OlmoForCausalLM", CtModule::Olmo),
    foreign(Architecture::Olmo2, "olmo2", "Olmo2ForCausalLM", CtModule::Olmo2),
    foreign(Architecture::Falcon, "falcon", "FalconForCausalLM", CtModule::Falcon),
    foreign_q(Architecture::Glm4, "glm4", "Glm4ForCausalLM", CtModule::Glm4New, "glm4", CtModule::QuantizedGlm4),
    // Both read `ChatGLMModel` directories; `model_type` `chatglm` picks the first.
    foreign(Architecture::Chatglm, "chatglm", "ChatGLMModel", CtModule::Glm4),
    foreign(Architecture::Chatglm3, "chatglm3", "ChatGLMModel", CtModule::Chatglm),
    foreign(Architecture::DeepseekV2, "deepseek_v2", "DeepseekV2ForCausalLM", CtModule::Deepseek2),
    foreign(Architecture::Mpt, "mpt", "MptForCausalLM", CtModule::Mpt),
    foreign(Architecture::Persimmon, "persimmon", "PersimmonForCausalLM", CtModule::Persimmon),
    foreign_q(Architecture::Lfm2, "lfm2", "Lfm2ForCausalLM", CtModule::Lfm2, "lfm2", CtModule::QuantizedLfm2),
    // candle-transformers recurrent modules (issue 32's stretch).
    foreign(Architecture::Mamba, "mamba", "MambaForCausalLM", CtModule::Mamba),
    foreign(Architecture::Mamba2, "mamba2", "Mamba2ForCausalLM", CtModule::Mamba2),
    foreign(Architecture::Rwkv5, "rwkv5", "Rwkv5ForCausalLM", CtModule::RwkvV5),
    foreign(Architecture::Rwkv6, "rwkv6", "Rwkv6ForCausalLM", CtModule::RwkvV6),
    foreign(Architecture::Rwkv7, "rwkv7", "RWKV7ForCausalLM", CtModule::RwkvV7),
    foreign(Architecture::RecurrentGemma, "recurrent_gemma", "RecurrentGemmaForCausalLM", CtModule::RecurrentGemma),
];

/// [`foreign`], with candle-transformers' quantized `qmodule` for llama.cpp files of
/// `general.architecture` `gguf_name`.
const fn foreign_q(
    arch: Architecture,
    name: &'static str,
    class: &'static str,
    module: CtModule,
    gguf_name: &'static str,
    qmodule: CtModule,
) -> Row {
    let mut row = foreign(arch, name, class, module);
    row.gguf_name = Some(gguf_name);
    row.ct[0] = Some(qmodule);
    row
}

/// The row of an architecture only a dense candle-transformers module runs (read from
/// Hugging Face directories as `name` or `class`).
const fn foreign(
    arch: Architecture,
    name: &'static str,
    class: &'static str,
    module: CtModule,
) -> Row {
    Row {
        arch,
        name,
        hf_class: Some(class),
        gguf: false,
        gguf_name: None,
        family: FamilyKind::Foreign,
        llama: llama::Variant {
            always_slides: false,
            slides_when_enabled: false,
            qkv_bias: false,
            qk_norm: false,
        },
        ct: [None, None, Some(module)],
    }
}

/// A model's family with its hyper-parameters: what computes it.
#[derive(Debug, Clone)]
pub enum Family {
    /// The Llama family's own decoder.
    Llama(llama::Config),
    /// Gemma 3's own decoder.
    Gemma3(gemma3::Config),
    /// A model given from Rust, which loads itself; driftsweep knows only its sizes.
    Custom(CustomLoader, Sizes),
    /// An architecture without an own decoder (engine `candle-transformers` only): its sizes
    /// and sliding window, read from its `config.json` ([`ForeignConfig::from_config_json`]).
    Foreign(ForeignConfig),
}

impl Family {
    /// The config of a GGUF file of architecture `arch` whose embedding has `vocab_size`
    /// rows, with the layout of its tensors and the tensors its header must list (`None`
    /// for an architecture no own decoder reads from GGUF: its sizes come from the metadata,
    /// [`ForeignConfig::from_gguf`]).
    pub fn from_gguf(
        arch: Architecture,
        c: &Content,
        vocab_size: usize,
    ) -> Result<(Family, Option<Layout>), ModelError> {
        if !arch.own_gguf() {
            return Ok((
                Family::Foreign(ForeignConfig::from_gguf(c, vocab_size)?),
                None,
            ));
        }
        Ok(match arch.family() {
            FamilyKind::Llama => {
                let cfg = llama::from_gguf(c, arch.name(), vocab_size)?;
                let layout = llama::gguf_layout(&cfg);
                (Family::Llama(cfg), Some(layout))
            }
            FamilyKind::Gemma3 => (
                Family::Gemma3(gemma3::Config::from_gguf_checked(c)?),
                Some(gemma3::GGUF_LAYOUT),
            ),
            FamilyKind::Custom | FamilyKind::Foreign => {
                return Err(ModelError::Unsupported(format!(
                    "architecture `{arch}` has no GGUF files the own decoders read"
                )));
            }
        })
    }

    /// The config a Hugging Face `config.json` (its bytes) of architecture `arch` describes;
    /// `label` names the file in messages about its fields.
    pub fn from_config_json(
        arch: Architecture,
        json: &[u8],
        label: &str,
    ) -> Result<Family, ModelError> {
        match arch.family() {
            FamilyKind::Llama => Ok(Family::Llama(llama::from_config_json(
                arch.llama_variant(),
                json,
                label,
            )?)),
            // Gemma 3's own decoder reads GGUF files only: its directories are foreign.
            FamilyKind::Foreign | FamilyKind::Gemma3 => Ok(Family::Foreign(
                ForeignConfig::from_config_json(json, label)?,
            )),
            FamilyKind::Custom => Err(ModelError::Unsupported(format!(
                "architecture `{arch}` is not read from Hugging Face directories"
            ))),
        }
    }

    /// The family's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Llama(_) => "the Llama family",
            Family::Gemma3(_) => "Gemma 3",
            Family::Custom(..) => "a custom model",
            Family::Foreign(_) => "an architecture without an own decoder",
        }
    }

    /// The sizes.
    pub fn sizes(&self) -> Sizes {
        match self {
            Family::Llama(c) => Sizes {
                vocab_size: c.vocab_size,
                num_layers: c.num_hidden_layers,
                context_len: c.max_position_embeddings,
            },
            Family::Gemma3(c) => Sizes {
                vocab_size: c.vocab_size,
                num_layers: c.num_hidden_layers,
                context_len: c.max_position_embeddings,
            },
            Family::Custom(_, s) => *s,
            Family::Foreign(c) => c.sizes,
        }
    }

    /// The context cut to at most `positions`.
    pub fn cap_context(&mut self, positions: usize) {
        let context = match self {
            Family::Llama(c) => &mut c.max_position_embeddings,
            Family::Gemma3(c) => &mut c.max_position_embeddings,
            Family::Custom(_, s) => &mut s.context_len,
            Family::Foreign(c) => &mut c.sizes.context_len,
        };
        *context = (*context).min(positions);
    }

    /// Parameters of the own decoder (0 for a custom model, whose weights driftsweep does
    /// not see: it counts as small).
    pub fn parameter_count(&self) -> u64 {
        match self {
            Family::Llama(c) => c.parameter_count(),
            Family::Gemma3(c) => c.parameter_count(),
            Family::Custom(..) | Family::Foreign(_) => 0,
        }
    }

    /// The sliding window of its attention, if it has one (Gemma 3's local layers').
    pub fn sliding_window(&self) -> Option<usize> {
        match self {
            Family::Llama(c) => c.sliding_window,
            Family::Gemma3(c) => Some(c.sliding_window),
            Family::Custom(..) => None,
            Family::Foreign(c) => c.sliding_window,
        }
    }

    /// What a file of this family must hold, for the header check.
    pub fn expected(&self) -> Option<Expected> {
        match self {
            Family::Llama(c) => Some(c.expected()),
            Family::Gemma3(c) => Some(c.expected()),
            Family::Custom(..) | Family::Foreign(_) => None,
        }
    }

    /// The GGUF layout of its tensors.
    pub fn gguf_layout(&self) -> Option<Layout> {
        match self {
            Family::Llama(c) => Some(llama::gguf_layout(c)),
            Family::Gemma3(_) => Some(gemma3::GGUF_LAYOUT),
            Family::Custom(..) | Family::Foreign(_) => None,
        }
    }

    /// Its own decoder over the weights in `src`.
    pub fn load_own(&self, src: Source<'static>) -> Result<Box<dyn ModelUnderTest>, ModelError> {
        let loaded = match self {
            Family::Llama(c) => {
                llama::Decoder::new(c, src).map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
            }
            Family::Gemma3(c) => {
                gemma3::Model::new(c, src).map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
            }
            Family::Custom(..) => {
                return Err(ModelError::Unsupported(
                    "a custom model has no own decoder".into(),
                ));
            }
            Family::Foreign(_) => {
                return Err(ModelError::Unsupported(
                    "driftsweep has no own decoder for this architecture: engine \
                     `candle-transformers` runs it"
                        .into(),
                ));
            }
        };
        loaded.map_err(|e| ModelError::Load(e.to_string()))
    }
}
