//! The KV cache of a run on an own decoder.

use candle_core::Tensor;
use candle_nn::kv_cache::KvCache;

/// The KV cache of one run: one [`KvCache`] per layer, over the sequence dimension.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    /// An empty cache of `layers` layers preallocated for `capacity` positions (it grows if
    /// exceeded).
    pub(crate) fn new(layers: usize, capacity: usize) -> Cache {
        Cache {
            layers: (0..layers)
                .map(|_| KvCache::new(2, capacity.max(1)))
                .collect(),
        }
    }

    /// The per-layer caches.
    pub(crate) fn layers_mut(&mut self) -> &mut [KvCache] {
        &mut self.layers
    }

    /// Number of positions cached so far (the offset of the next token).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::current_seq_len)
    }

    /// The caches of single sequences of equal length side by side, as one batch's cache
    /// (copied, bit for bit), with room for `capacity` positions.
    pub(crate) fn stack(rows: &[Cache], capacity: usize) -> candle_core::Result<Cache> {
        let Some(first) = rows.first() else {
            candle_core::bail!("a batch needs at least one sequence");
        };
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let mut fresh = KvCache::new(2, capacity.max(1));
            let mut ks = Vec::with_capacity(rows.len());
            let mut vs = Vec::with_capacity(rows.len());
            for c in rows {
                if let (Some(k), Some(v)) = (c.layers[l].k()?, c.layers[l].v()?) {
                    ks.push(k);
                    vs.push(v);
                }
            }
            if ks.len() == rows.len() {
                fresh.append(&Tensor::cat(&ks, 0)?, &Tensor::cat(&vs, 0)?)?;
            }
            layers.push(fresh);
        }
        Ok(Cache { layers })
    }

    /// A new cache holding this cache's first `len` positions (copied, bit for bit), with
    /// room for `capacity` positions.
    pub fn truncated(&self, len: usize, capacity: usize) -> candle_core::Result<Cache> {
        if len > self.seq_len() {
            candle_core::bail!(
                "cannot keep {len} positions of a cache holding {}",
                self.seq_len()
            );
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for kv in &self.layers {
            let mut fresh = KvCache::new(2, capacity.max(1));
            if let (Some(k), Some(v)) = (kv.k()?, kv.v()?) {
                fresh.append(
                    &k.narrow(2, 0, len)?.contiguous()?,
                    &v.narrow(2, 0, len)?.contiguous()?,
                )?;
            }
            layers.push(fresh);
        }
        Ok(Cache { layers })
    }
}
