//! candle-transformers' dense modules of group B (issue 32): phi, phi3, starcoder2, olmo,
//! olmo2, falcon, glm4, glm4_new, chatglm, deepseek2 and lfm2 here; stable_lm, mpt and
//! persimmon in [`super::dense_b2`]. Each is built from its `config.json` the way the crate's
//! own examples build it, and run as the crate ships it. (The config parsing they share is
//! in `dense_b2`, which imports nothing from here.)

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models as ct;

use super::dense_b2::{self, load_err, parse};
use super::stateful::Stateful;
use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// Builds `module` from `text` (its `config.json`) on `vb`, or `None` when `module` is not
/// one of this group's.
pub(super) fn build(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Option<Result<Box<dyn Stateful>, ModelError>> {
    let m = module;
    Some(match module {
        CtModule::Phi => parse(m, text).and_then(|c| boxed(m, ct::phi::Model::new(&c, vb))),
        CtModule::Phi3 => parse(m, text).and_then(|c| boxed(m, ct::phi3::Model::new(&c, vb))),
        CtModule::Starcoder2 => {
            parse(m, text).and_then(|c| boxed(m, ct::starcoder2::Model::new(&c, vb)))
        }
        CtModule::Olmo => parse(m, text).and_then(|c| boxed(m, ct::olmo::Model::new(&c, vb))),
        CtModule::Olmo2 => parse(m, text).and_then(|c| boxed(m, ct::olmo2::Model::new(&c, vb))),
        CtModule::Falcon => parse(m, text).and_then(|c: ct::falcon::Config| {
            // The checks candle's falcon example runs: what the module cannot compute
            // (ALiBi, the new decoder architecture, an explicit `n_head_kv`) fails here.
            c.validate().map_err(load_err(m))?;
            boxed(m, ct::falcon::Falcon::load(vb, c))
        }),
        CtModule::Glm4 => parse(m, text).and_then(|c| boxed(m, ct::glm4::Model::new(&c, vb))),
        CtModule::Glm4New => {
            parse(m, text).and_then(|c| boxed(m, ct::glm4_new::ModelForCausalLM::new(&c, vb)))
        }
        CtModule::Chatglm => parse(m, text)
            .map(chatglm_config)
            .and_then(|c| boxed(m, ct::chatglm::Model::new(&c, vb))),
        CtModule::Deepseek2 => {
            parse(m, text).and_then(|c| boxed(m, ct::deepseek2::DeepSeekV2::new(&c, vb)))
        }
        CtModule::Lfm2 => parse(m, text).and_then(|c: ct::lfm2::Lfm2Config| {
            let c = c.into_config(false);
            let dt = vb.dtype();
            let device = vb.device().clone();
            let model = ct::lfm2::Model::new(&c, vb).map_err(load_err(m))?;
            let cache = ct::lfm2::Cache::new(true, dt, &c, &device).map_err(load_err(m))?;
            Ok(Box::new(Lfm2State { model, cache }) as Box<dyn Stateful>)
        }),
        CtModule::StableLm | CtModule::Mpt | CtModule::Persimmon => {
            return dense_b2::build(module, text, vb);
        }
        _ => return None,
    })
}

/// A built model, boxed, or its error.
fn boxed<M: Stateful + 'static>(
    module: CtModule,
    built: candle_core::Result<M>,
) -> Result<Box<dyn Stateful>, ModelError> {
    built
        .map(|m| Box::new(m) as Box<dyn Stateful>)
        .map_err(load_err(module))
}

/// candle's `chatglm::Config` has public fields but no `Deserialize`: its fields are the
/// `glm4::Config` ones less `rope_ratio` and `eos_token_id`, so `config.json` is read as
/// that and copied over (a `rope_ratio` other than 1 is ignored by the chatglm module,
/// which is what it runs).
fn chatglm_config(c: ct::glm4::Config) -> ct::chatglm::Config {
    ct::chatglm::Config {
        num_layers: c.num_layers,
        padded_vocab_size: c.padded_vocab_size,
        hidden_size: c.hidden_size,
        ffn_hidden_size: c.ffn_hidden_size,
        kv_channels: c.kv_channels,
        num_attention_heads: c.num_attention_heads,
        seq_length: c.seq_length,
        layernorm_epsilon: c.layernorm_epsilon,
        rmsnorm: c.rmsnorm,
        apply_residual_connection_post_layernorm: c.apply_residual_connection_post_layernorm,
        post_layer_norm: c.post_layer_norm,
        add_bias_linear: c.add_bias_linear,
        add_qkv_bias: c.add_qkv_bias,
        bias_dropout_fusion: c.bias_dropout_fusion,
        multi_query_attention: c.multi_query_attention,
        multi_query_group_num: c.multi_query_group_num,
        apply_query_key_layer_scaling: c.apply_query_key_layer_scaling,
        attention_softmax_in_fp32: c.attention_softmax_in_fp32,
        fp32_residual_connection: c.fp32_residual_connection,
    }
}

// phi, falcon, glm4 and chatglm take no offset: their position is their cache's length,
// which the sequence's `len` always equals (a sequence starts on an emptied cache).

impl Stateful for ct::phi::Model {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        ct::phi::Model::forward(self, x)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::phi3::Model {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::phi3::Model::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::starcoder2::Model {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::starcoder2::Model::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::olmo::Model {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::olmo::Model::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::olmo2::Model {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::olmo2::Model::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::falcon::Falcon {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        ct::falcon::Falcon::forward(self, x)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::glm4::Model {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        ct::glm4::Model::forward(self, x)
    }
    fn clear(&mut self) {
        self.reset_kv_cache()
    }
}

impl Stateful for ct::glm4_new::ModelForCausalLM {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::glm4_new::ModelForCausalLM::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::chatglm::Model {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        ct::chatglm::Model::forward(self, x)
    }
    fn clear(&mut self) {
        self.reset_kv_cache()
    }
}

impl Stateful for ct::deepseek2::DeepSeekV2 {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::deepseek2::DeepSeekV2::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

/// `lfm2` keeps its state (attention KV and convolution windows) outside the model.
struct Lfm2State {
    model: ct::lfm2::Model,
    cache: ct::lfm2::Cache,
}

impl Stateful for Lfm2State {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.model.forward(x, offset, &mut self.cache)
    }
    fn clear(&mut self) {
        self.cache.clear()
    }
}
