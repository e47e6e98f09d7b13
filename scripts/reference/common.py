"""Shared parts of the float64 reference forward passes: reading a GGUF file with the `gguf`
package, and the arithmetic the forward passes run on.

Nothing here comes from driftsweep's Rust decoder: tensors are dequantized by the `gguf`
package's own numpy code (`gguf.quants.dequantize`) and kept in the file's layout (llama.cpp
names, rows as stored); the forward passes take it from there.

Two kinds of arithmetic:
- `Exact`: every operation in float64 on the dequantized weights (float64 copies of their
  float32 values). This is the reference.
- `F32Noise`: the same forward, with a model of what float32 arithmetic adds. It is the
  standard rounding-error model of a float32 kernel: every stored activation is rounded to
  float32 (unit roundoff u = 2**-24), and a length-n dot product or sum returns its exact value
  plus an error drawn uniformly from [-1, 1] * sqrt(n) * u * sum|a_i b_i| (the probabilistic
  bound of Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM
  J. Sci. Comput. 41(5), 2019, with lambda = 1). Run against `Exact`, it says how far honest
  float32 rounding moves each logit of this model on these tokens; tests derive their bounds
  from it.
"""

import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

U32 = 2.0**-24


class Model:
    """A GGUF file: metadata and float64 tensors, by llama.cpp name, rows as numpy reads them
    (a GGUF tensor of ne = [cols, rows] is a (rows, cols) array: (out, in) for projections)."""

    def __init__(self, path, want=None):
        self.reader = GGUFReader(path)
        self.arch = self.meta("general.architecture")
        self._tensors = {t.name: t for t in self.reader.tensors}
        self._cache = {}
        self.want = want

    def meta(self, key, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            if default is None:
                raise KeyError(f"metadata key {key} is missing")
            return default
        return f.contents()

    def has(self, name):
        return name in self._tensors

    def f32(self, name):
        """The tensor as float32, exactly as `gguf` dequantizes it."""
        t = self._tensors[name]
        a = dequantize(t.data, t.tensor_type)
        shape = [int(d) for d in reversed(t.shape)]
        return np.ascontiguousarray(a.reshape(shape), dtype=np.float32)

    def w(self, name):
        """The tensor as float64 (the float32 values, widened exactly)."""
        if name not in self._cache:
            self._cache[name] = self.f32(name).astype(np.float64)
        return self._cache[name]

    def names(self):
        return list(self._tensors)


class Exact:
    """float64 arithmetic."""

    name = "exact"

    def dot(self, a, b):
        """a @ b (the last axis of a against the second-to-last of b)."""
        return a @ b

    def store(self, x):
        return x

    def reduce(self, value, n):
        """The result of a length-n sum (mean of squares, softmax denominator)."""
        return value

    def angles(self, positions, inv_freq):
        """RoPE angles: positions (T,) times inverse frequencies (d/2,)."""
        return np.outer(positions.astype(np.float64), inv_freq)


class F32Noise(Exact):
    """float64 arithmetic plus the float32 rounding-error model of the module notes."""

    name = "f32-noise"

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def store(self, x):
        return x.astype(np.float32).astype(np.float64)

    def dot(self, a, b):
        y = a @ b
        n = a.shape[-1]
        scale = np.sqrt(n) * U32 * (np.abs(a) @ np.abs(b))
        return self.store(y + self.rng.uniform(-1.0, 1.0, y.shape) * scale)

    def reduce(self, value, n):
        # The terms of these sums are non-negative, so sum|terms| is the value itself.
        return value * (1.0 + self.rng.uniform(-1.0, 1.0, np.shape(value)) * np.sqrt(n) * U32)

    def angles(self, positions, inv_freq):
        # As the float32 kernels compute them: inverse frequencies and products in float32.
        f = np.outer(positions.astype(np.float32), inv_freq.astype(np.float32))
        return f.astype(np.float32).astype(np.float64)


def rms_norm(ar, x, weight, eps):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (weight as stored in the file)."""
    n = x.shape[-1]
    ms = ar.reduce(np.mean(x * x, axis=-1, keepdims=True), n)
    return ar.store(ar.store(x / np.sqrt(ms + eps)) * weight)


def softmax(ar, scores):
    """Softmax over the last axis; -inf entries get weight 0."""
    m = np.max(scores, axis=-1, keepdims=True)
    e = ar.store(np.exp(scores - m))
    s = ar.reduce(np.sum(e, axis=-1, keepdims=True), scores.shape[-1])
    return ar.store(e / s)


def read_ids(spec):
    """Token ids from a file (whitespace- or comma-separated) or a comma-separated list."""
    import os

    text = open(spec).read() if os.path.isfile(spec) else spec
    ids = [int(t) for t in text.replace(",", " ").split()]
    if not ids:
        sys.exit("no token ids given")
    return np.array(ids, dtype=np.int64)


def attention(ar, q, k, v, scale, window=None):
    """Causal grouped-query attention. q: (heads, T, d); k, v: (kv_heads, T, d). A query at
    position i sees keys j with j <= i and, with a window, i - j < window (that is, the last
    `window` positions, itself included). Returns (T, heads * d)."""
    heads, t, d = q.shape
    group = heads // k.shape[0]
    k = np.repeat(k, group, axis=0)
    v = np.repeat(v, group, axis=0)
    scores = ar.store(ar.dot(q, np.swapaxes(k, 1, 2)) * scale)
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    hidden = j > i
    if window is not None:
        hidden |= i - j >= window
    scores = np.where(hidden[None], -np.inf, scores)
    probs = softmax(ar, scores)
    y = ar.dot(probs, v)  # (heads, T, d)
    return np.ascontiguousarray(np.swapaxes(y, 0, 1)).reshape(t, heads * d)


def linear(ar, x, w):
    """x @ w.T for a projection stored (out, in)."""
    return ar.dot(x, w.T)
