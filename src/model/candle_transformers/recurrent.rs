//! candle-transformers' recurrent modules (issue 32's stretch): mamba, mamba2, rwkv_v5,
//! rwkv_v6, rwkv_v7 and recurrent_gemma. Their state plays the KV cache's part: a sequence
//! starts on a fresh state, and `clear` drops it.

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as ct;

use super::dense_b2::{load_err, parse};
use super::stateful::Stateful;
use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// mamba2's prefill chunk when `config.json` sets none (transformers' `Mamba2Config`).
const MAMBA2_CHUNK: usize = 256;

/// Builds a recurrent `module` from `text` on `vb`; `None` for other modules.
pub(super) fn build(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Option<Result<Box<dyn Stateful>, ModelError>> {
    let m = module;
    let (dtype, device) = (vb.dtype(), vb.device().clone());
    let boxed = |s: Box<dyn Stateful>| Ok(s);
    Some(match module {
        CtModule::Mamba => parse(m, text).and_then(|cfg: ct::mamba::Config| {
            let model = ct::mamba::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(Recurrent {
                model: Mamba(model),
                cfg,
                dtype,
                device,
                state: None,
            }))
        }),
        CtModule::Mamba2 => parse(m, text).and_then(|cfg: ct::mamba2::Config| {
            let chunk = parse::<serde_json::Value>(m, text)?["chunk_size"]
                .as_u64()
                .map_or(MAMBA2_CHUNK, |c| c as usize);
            let model = ct::mamba2::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(Recurrent {
                model: Mamba2(model, chunk),
                cfg,
                dtype,
                device,
                state: None,
            }))
        }),
        CtModule::RwkvV5 => parse(m, text).and_then(|cfg: ct::rwkv_v5::Config| {
            let model = ct::rwkv_v5::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(Recurrent {
                model: RwkvV5(model),
                cfg,
                dtype,
                device,
                state: None,
            }))
        }),
        CtModule::RwkvV6 => parse(m, text).and_then(|cfg: ct::rwkv_v5::Config| {
            let model = ct::rwkv_v6::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(Recurrent {
                model: RwkvV6(model),
                cfg,
                dtype,
                device,
                state: None,
            }))
        }),
        CtModule::RwkvV7 => parse(m, text).and_then(|cfg: ct::rwkv_v7::Config| {
            let model = ct::rwkv_v7::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(Recurrent {
                model: RwkvV7(model),
                cfg,
                dtype,
                device,
                state: None,
            }))
        }),
        CtModule::RecurrentGemma => parse(m, text).and_then(|cfg| {
            let model = ct::recurrent_gemma::Model::new(&cfg, vb).map_err(load_err(m))?;
            boxed(Box::new(RecurrentGemma {
                empty: model.clone(),
                model,
            }))
        }),
        _ => return None,
    })
}

/// A recurrent model and its state, made on the first forward (it needs the batch size).
struct Recurrent<M: Step> {
    model: M,
    cfg: M::Config,
    dtype: DType,
    device: Device,
    state: Option<M::State>,
}

/// One recurrent module: how its state is made and how a (B, t) block of ids runs.
trait Step: Send {
    type Config: Send;
    type State: Send;
    fn state(
        cfg: &Self::Config,
        batch: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self::State>;
    /// The logits of each sequence's last position after `x`.
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor>;
}

impl<M: Step> Stateful for Recurrent<M> {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        let state = match &mut self.state {
            Some(s) => s,
            None => {
                let s = M::state(&self.cfg, x.dim(0)?, self.dtype, &self.device)?;
                self.state.insert(s)
            }
        };
        self.model.step(x, state)
    }
    fn clear(&mut self) {
        self.state = None;
    }
}

/// mamba's forward takes one token per sequence ((B,) ids): a prefill is t such steps (the
/// module has no parallel scan), so its prefill and decode compute the same thing.
struct Mamba(ct::mamba::Model);

impl Step for Mamba {
    type Config = ct::mamba::Config;
    type State = ct::mamba::State;
    fn state(
        c: &Self::Config,
        b: usize,
        dt: DType,
        dev: &Device,
    ) -> candle_core::Result<Self::State> {
        ct::mamba::State::new(b, c, dt, dev)
    }
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor> {
        let mut logits = None;
        for j in 0..x.dim(1)? {
            logits = Some(self.0.forward(&x.i((.., j))?.contiguous()?, state)?);
        }
        logits.ok_or_else(|| candle_core::Error::Msg("no token ids".into()))
    }
}

/// mamba2 prefills a block with its chunked scan (`forward_prefill`, logits of every row:
/// the last is taken) and decodes one token per sequence with `forward`.
struct Mamba2(ct::mamba2::Model, usize);

impl Step for Mamba2 {
    type Config = ct::mamba2::Config;
    type State = ct::mamba2::State;
    fn state(
        c: &Self::Config,
        b: usize,
        dt: DType,
        dev: &Device,
    ) -> candle_core::Result<Self::State> {
        ct::mamba2::State::new(b, c, dt, dev)
    }
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        if t == 1 {
            return self.0.forward(&x.i((.., 0))?.contiguous()?, state);
        }
        self.0.forward_prefill(x, state, self.1)?.i((.., t - 1))
    }
}

/// rwkv_v5 returns the logits of every row of a block: the last is taken. Its state is f32
/// whatever the model's dtype (rwkv_v5.rs:70-93).
struct RwkvV5(ct::rwkv_v5::Model);

impl Step for RwkvV5 {
    type Config = ct::rwkv_v5::Config;
    type State = ct::rwkv_v5::State;
    fn state(
        c: &Self::Config,
        b: usize,
        _: DType,
        dev: &Device,
    ) -> candle_core::Result<Self::State> {
        ct::rwkv_v5::State::new(b, c, dev)
    }
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        self.0.forward(x, state)?.i((.., t - 1))
    }
}

/// rwkv_v6: as rwkv_v5 (it shares v5's Config and State).
struct RwkvV6(ct::rwkv_v6::Model);

impl Step for RwkvV6 {
    type Config = ct::rwkv_v5::Config;
    type State = ct::rwkv_v5::State;
    fn state(
        c: &Self::Config,
        b: usize,
        _: DType,
        dev: &Device,
    ) -> candle_core::Result<Self::State> {
        ct::rwkv_v5::State::new(b, c, dev)
    }
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        self.0.forward(x, state)?.i((.., t - 1))
    }
}

/// rwkv_v7 runs one sequence (its State has no batch dimension, rwkv_v7.rs:118-140): a
/// block goes through `forward_seq`, which returns the last token's logits.
struct RwkvV7(ct::rwkv_v7::Model);

impl Step for RwkvV7 {
    type Config = ct::rwkv_v7::Config;
    type State = ct::rwkv_v7::State;
    fn state(
        c: &Self::Config,
        b: usize,
        dt: DType,
        dev: &Device,
    ) -> candle_core::Result<Self::State> {
        if b != 1 {
            candle_core::bail!("rwkv_v7 runs one sequence at a time (its state has no batch)");
        }
        ct::rwkv_v7::State::new_with_dtype(c, dev, dt)
    }
    fn step(&self, x: &Tensor, state: &mut Self::State) -> candle_core::Result<Tensor> {
        let ids = x.squeeze(0)?.to_vec1::<u32>()?;
        self.0.forward_seq(&ids, state)?.unsqueeze(0)
    }
}

/// recurrent_gemma has no way to empty its state; it is `Clone`, so a copy made before the
/// first forward (tensors shared) replaces it.
struct RecurrentGemma {
    empty: ct::recurrent_gemma::Model,
    model: ct::recurrent_gemma::Model,
}

impl Stateful for RecurrentGemma {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.model.forward(x, offset)?.squeeze(D::Minus2)
    }
    fn clear(&mut self) {
        self.model = self.empty.clone();
    }
}
