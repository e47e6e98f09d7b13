//! The family table's rows: for each architecture its names, the family that computes it and
//! candle-transformers' module per weight format (see the parent module).

use super::names::{Architecture, CtModule, FamilyKind};
use crate::model::llama;

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

/// The table.
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
    foreign(
        Architecture::Mixtral,
        "mixtral",
        "MixtralForCausalLM",
        CtModule::Mixtral,
    ),
    foreign(
        Architecture::Gemma,
        "gemma",
        "GemmaForCausalLM",
        CtModule::Gemma,
    ),
    foreign(
        Architecture::Gemma2,
        "gemma2",
        "Gemma2ForCausalLM",
        CtModule::Gemma2,
    ),
    foreign(
        Architecture::Qwen2Moe,
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        CtModule::Qwen2Moe,
    ),
    foreign_q(
        Architecture::Qwen3Moe,
        "qwen3_moe",
        "Qwen3MoeForCausalLM",
        CtModule::Qwen3Moe,
        "qwen3moe",
        CtModule::QuantizedQwen3Moe,
    ),
    foreign(Architecture::Yi, "yi", "YiForCausalLM", CtModule::Yi),
    foreign(
        Architecture::Helium,
        "helium",
        "HeliumForCausalLM",
        CtModule::Helium,
    ),
    foreign(
        Architecture::Smollm3,
        "smollm3",
        "SmolLM3ForCausalLM",
        CtModule::Smollm3,
    ),
    foreign(
        Architecture::Granite,
        "granite",
        "GraniteForCausalLM",
        CtModule::Granite,
    ),
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
    foreign_q(
        Architecture::Phi,
        "phi",
        "PhiForCausalLM",
        CtModule::Phi,
        "phi2",
        CtModule::QuantizedPhi,
    ),
    foreign_q(
        Architecture::Phi3,
        "phi3",
        "Phi3ForCausalLM",
        CtModule::Phi3,
        "phi3",
        CtModule::QuantizedPhi3,
    ),
    foreign(
        Architecture::Starcoder2,
        "starcoder2",
        "Starcoder2ForCausalLM",
        CtModule::Starcoder2,
    ),
    foreign_q(
        Architecture::StableLm,
        "stablelm",
        "StableLmForCausalLM",
        CtModule::StableLm,
        "stablelm",
        CtModule::QuantizedStableLm,
    ),
    foreign(
        Architecture::Olmo,
        "olmo",
        "OlmoForCausalLM",
        CtModule::Olmo,
    ),
    foreign(
        Architecture::Olmo2,
        "olmo2",
        "Olmo2ForCausalLM",
        CtModule::Olmo2,
    ),
    foreign(
        Architecture::Falcon,
        "falcon",
        "FalconForCausalLM",
        CtModule::Falcon,
    ),
    foreign_q(
        Architecture::Glm4,
        "glm4",
        "Glm4ForCausalLM",
        CtModule::Glm4New,
        "glm4",
        CtModule::QuantizedGlm4,
    ),
    // Both read `ChatGLMModel` directories; `model_type` `chatglm` picks the first.
    foreign(
        Architecture::Chatglm,
        "chatglm",
        "ChatGLMModel",
        CtModule::Glm4,
    ),
    foreign(
        Architecture::Chatglm3,
        "chatglm3",
        "ChatGLMModel",
        CtModule::Chatglm,
    ),
    foreign(
        Architecture::DeepseekV2,
        "deepseek_v2",
        "DeepseekV2ForCausalLM",
        CtModule::Deepseek2,
    ),
    foreign(Architecture::Mpt, "mpt", "MptForCausalLM", CtModule::Mpt),
    foreign(
        Architecture::Persimmon,
        "persimmon",
        "PersimmonForCausalLM",
        CtModule::Persimmon,
    ),
    foreign_q(
        Architecture::Lfm2,
        "lfm2",
        "Lfm2ForCausalLM",
        CtModule::Lfm2,
        "lfm2",
        CtModule::QuantizedLfm2,
    ),
    // candle-transformers recurrent modules (issue 32's stretch).
    foreign(
        Architecture::Mamba,
        "mamba",
        "MambaForCausalLM",
        CtModule::Mamba,
    ),
    foreign(
        Architecture::Mamba2,
        "mamba2",
        "Mamba2ForCausalLM",
        CtModule::Mamba2,
    ),
    foreign(
        Architecture::Rwkv5,
        "rwkv5",
        "Rwkv5ForCausalLM",
        CtModule::RwkvV5,
    ),
    foreign(
        Architecture::Rwkv6,
        "rwkv6",
        "Rwkv6ForCausalLM",
        CtModule::RwkvV6,
    ),
    foreign(
        Architecture::Rwkv7,
        "rwkv7",
        "RWKV7ForCausalLM",
        CtModule::RwkvV7,
    ),
    foreign(
        Architecture::RecurrentGemma,
        "recurrent_gemma",
        "RecurrentGemmaForCausalLM",
        CtModule::RecurrentGemma,
    ),
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
