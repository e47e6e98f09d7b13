"""The `transformers` reference engine: a worker process that driftsweep starts (src/reference/).

PyTorch + Hugging Face transformers on the CPU, eager attention, no cache, in float32 or float64:
the model's reference definition, computed from the same weights the engines under test load.
No network (HF_HUB_OFFLINE), no port: requests come on stdin, answers go to stdout, one at a
time. driftsweep embeds this file in its binary and runs it with `python -c`; the python is
the one of `.peer-venv/` (`bash scripts/peer/setup.sh`, the peer's pinned stack), or the one
DRIFTSWEEP_TRANSFORMERS_PYTHON names.

Framing, both ways: one JSON header line (UTF-8, ending in a newline), then the raw payload
the header announces, if any.

Requests:
    {"op": "load", "path": P, "dtype": "f32"|"f64", "islands": "as_shipped"|"widened"}
        P is a Hugging Face directory (config.json + safetensors) or a GGUF file (read by
        transformers' own GGUF loader, `gguf_file=`), loaded with eager attention and eager
        mixture-of-experts loops. Loads once per (path, dtype) and keeps the model. transformers
        computes some parts in float32 whatever the model's dtype (RMSNorm, the attention
        softmax, the rotary table: its "float32 islands"); `islands` (default as_shipped)
        chooses per handle whether a float64 model keeps them or computes them in float64 too
        ("widened", dtype f64 only: see `Widened` and `exact_rope`). A load
        whose files lack a weight the class needs is refused (transformers would initialize it
        at random). Answer: {"ok": true, "handle": H, "class": ..., "arch": ..., "vocab": V,
        "other_dtypes": {name: dtype of every parameter or buffer not in the asked dtype},
        "unexpected_keys": [weights in the files the class does not read],
        "config_overrides": {key: [transformers' default, the value set]} where a GGUF file's
        config needed one (`gguf_config`), ...}.
    {"op": "forward", "handle": H, "n": N}  + N token ids, u32 little-endian
        One forward over the N ids (torch.no_grad, use_cache=False). Answer:
        {"ok": true, "n": N, "vocab": V, "elem": "f64"|"f32", "bytes": B} + the logits of
        every position, row-major [N, V], little-endian, B = N * V * 8 (f64) or * 4 (f32).
    {"op": "quit"}
        Answer {"ok": true}, then the worker exits (so it does at the end of stdin).

On start the worker says {"ok": true, "hello": "driftsweep-transformers-worker", "torch": ...,
"transformers": ...}, or {"ok": false, "kind": "not_installed", ...} when torch or
transformers does not import. An error answers {"ok": false, "kind": K, "message": M} with K
one of "unsupported" (an architecture transformers does not read; "arch" names it),
"bad_request" (ids outside the vocabulary, an unknown handle, a malformed header) or "error"
(anything else, with the exception's text); the worker then waits for the next request. Only
a framing error it cannot skip past (a payload it cannot read) ends it.

Nothing but frames reaches stdout: the real stdout is kept for the frames, and file
descriptor 1 points at stderr, where transformers' and torch's own messages go.
"""

import contextlib
import json
import os
import struct
import sys
import traceback

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantization progress bar

HELLO = "driftsweep-transformers-worker"
MAX_HEADER = 1 << 20
MAX_IDS = 1 << 24
DTYPES = ("f32", "f64")
ISLANDS = ("as_shipped", "widened")


class BadRequest(Exception):
    """The request itself is wrong (bad_request)."""


class LoadFailed(Exception):
    """transformers raised while loading: the message says what and what it logged (error)."""


class Unsupported(Exception):
    """transformers does not read this architecture (unsupported)."""

    def __init__(self, arch, message):
        super().__init__(message)
        self.arch = arch


def frames_out():
    """The protocol's stream: the process's real stdout. fd 1 then points at stderr, so that a
    print anywhere (python or C) cannot corrupt a frame."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=0)


def send(out, header, payload=None):
    line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    out.write(line)
    if payload is not None:
        view = memoryview(payload)
        while len(view):
            n = out.write(view)
            view = view[n:]
    out.flush()


def read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"stdin ended {n - len(buf)} bytes short of a payload of {n}")
        buf.extend(chunk)
    return bytes(buf)


def arch_of(path):
    """The architecture name a path declares: config.json's model_type, or a GGUF file's
    general.architecture (None when it cannot be read)."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "config.json")) as f:
                return json.load(f).get("model_type")
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("general.architecture")
        return None if field is None else field.contents()
    except Exception:
        return None


# transformers' words when it does not know an architecture (AutoConfig, the GGUF loader).
UNSUPPORTED_WORDS = (
    "does not recognize this architecture",
    "Unrecognized model",
    "Unrecognized configuration class",
    "is not supported yet",
)


def gguf_config(transformers, where, name):
    """The config transformers builds from a GGUF file, with what its mapping leaves at a
    default the file contradicts set as llama.cpp (the format's definition) reads the file.
    Returns (that config, {key: [default, value set]}); the load passes the config on, so the
    file's metadata is read once.

    Gemma 3: transformers maps no GGUF key to `query_pre_attn_scalar` (integrations/ggml.py,
    the "gemma3" table) and keeps Gemma3TextConfig's default 256; llama.cpp scales scores by
    key_length^-1/2, or (hidden / heads)^-1/2 for the 62-layer 27B (its gemma3 hparams,
    `f_attention_scale`). Both agree where head_dim is 256 (Gemma 3 270M to 12B), not elsewhere."""
    cfg = transformers.AutoConfig.from_pretrained(where, gguf_file=name)
    if getattr(cfg, "model_type", None) != "gemma3_text":
        return cfg, {}
    wide = cfg.num_hidden_layers == 62
    want = cfg.hidden_size // cfg.num_attention_heads if wide else cfg.head_dim
    if cfg.query_pre_attn_scalar == want:
        return cfg, {}
    was = cfg.query_pre_attn_scalar
    cfg.query_pre_attn_scalar = want
    return cfg, {"query_pre_attn_scalar": [was, want]}


class LogTail:
    """Collects what transformers logs at warning level or above while it is attached."""

    def __init__(self, transformers):
        import logging

        self.records = []
        self.logger = transformers.utils.logging.get_logger("transformers")
        outer = self

        class Keep(logging.Handler):
            def emit(self, record):
                outer.records.append(record.getMessage())

        self.handler = Keep(level=logging.WARNING)
        self.logger.addHandler(self.handler)

    def text(self):
        text = "\n".join(self.records).strip()
        return f"; transformers logged: {text[-3000:]}" if text else ""

    def close(self):
        self.logger.removeHandler(self.handler)


def exact_rope(torch, model):
    """The float64 rotary frequencies of `model`: [(module, buffer name, own, float64)].

    transformers makes the inverse frequencies in float32 at construction (dtype=torch.float)
    whatever the model's dtype; under `Widened` the rotary forward computes in float64, but from
    these float32-rounded frequencies, and the angles would still be off by about 1e-7 relative.
    Only the default RoPE (no scaling) is recomputed, and the float64 frequencies must round
    to the module's own float32 ones, or the load is refused. The forward itself is left as it
    is (cos/sin or complex, whatever the module computes)."""
    swaps = []
    for mod in model.modules():
        if not type(mod).__name__.endswith("RotaryEmbedding"):
            continue
        kinds = getattr(mod, "layer_types", None)
        per_type = isinstance(kinds, list)
        for kind in kinds if per_type else [None]:
            name = f"{kind}_inv_freq" if per_type else "inv_freq"
            own = getattr(mod, name, None)
            if own is None:
                continue
            params = mod.config.rope_parameters[kind] if per_type else mod.config.rope_parameters
            if params.get("rope_type", "default") != "default":
                raise BadRequest(f"islands widened: {type(mod).__name__} uses rope_type "
                                 f"{params['rope_type']}; only the default RoPE is recomputed")
            dim = 2 * own.shape[0]
            wide = 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            if not torch.allclose(wide.float(), own.float(), rtol=1e-6, atol=0):
                raise BadRequest(f"islands widened: the recomputed frequencies of "
                                 f"{type(mod).__name__} differ from its own")
            swaps.append((mod, name, own, wide.to(own.device)))
    return swaps


def set_rope(swaps, widened):
    """Puts the float64 frequencies in place (widened) or the module's own back."""
    for mod, name, own, wide in swaps:
        setattr(mod, name, wide if widened else own)


class Widened:
    """While active, transformers' float32 islands compute in float64: every cast to float32
    (`Tensor.float()`, `Tensor.to(torch.float32)`) and every float32 softmax become float64.

    transformers upcasts to float32 on purpose where half precision would lose too much (RMSNorm's
    variance, the attention softmax, the rotary angles); in a float64 model those upcasts are
    downcasts, and the logits move by about 1e-6 relative. Widening them leaves every operation
    of the modeling code as it is and only its precision changes. The rotary frequencies are a
    buffer made in float32 at construction: `exact_rope` recomputes them in float64."""

    def __init__(self, torch):
        self.torch = torch
        self.saved = None

    def __enter__(self):
        torch = self.torch
        f32, f64 = torch.float32, torch.float64
        to, softmax = torch.Tensor.to, torch.nn.functional.softmax

        def wide(d):
            return f64 if d is f32 else d

        def to_wide(t, *args, **kwargs):
            args = tuple(wide(a) for a in args)
            if "dtype" in kwargs:
                kwargs["dtype"] = wide(kwargs["dtype"])
            return to(t, *args, **kwargs)

        def softmax_wide(x, *args, **kwargs):
            if "dtype" in kwargs:
                kwargs["dtype"] = wide(kwargs["dtype"])
            return softmax(x, *args, **kwargs)

        self.saved = (to, torch.Tensor.float, softmax)
        torch.Tensor.to = to_wide
        torch.Tensor.float = lambda t, *a, **k: to(t, f64)
        torch.nn.functional.softmax = softmax_wide
        return self

    def __exit__(self, *exc):
        torch = self.torch
        torch.Tensor.to, torch.Tensor.float, torch.nn.functional.softmax = self.saved
        return False


class Worker:
    def __init__(self, torch, transformers):
        self.torch = torch
        self.transformers = transformers
        self.models = {}  # handle -> (model, vocab, load answer, islands)
        self.handles = {}  # ((realpath, dtype), islands) -> handle
        self.ropes = {}  # id(model) -> its rotary frequencies, own and float64 (exact_rope)

    def load(self, req):
        path, dtype = req.get("path"), req.get("dtype")
        islands = req.get("islands", "as_shipped")
        if not isinstance(path, str) or dtype not in DTYPES:
            raise BadRequest(f"load needs a string `path` and a `dtype` in {DTYPES}")
        if islands not in ISLANDS:
            raise BadRequest(f"load's `islands` must be one of {ISLANDS}, not {islands!r}")
        if islands == "widened" and dtype != "f64":
            raise BadRequest("`islands: widened` widens float32 islands to float64: dtype f64 only")
        if not os.path.exists(path):
            raise BadRequest(f"{path}: no such file or directory")
        key = (os.path.realpath(path), dtype)
        if (key, islands) in self.handles:
            h = self.handles[(key, islands)]
            return {"ok": True, "handle": h, **self.models[h][2]}
        # Both variants of one (path, dtype) share the model: a load is the slow part.
        same = [h for (k, _), h in self.handles.items() if k == key]
        if same:
            model, _, info, _ = self.models[same[0]]
            info = dict(info)
        else:
            arch = arch_of(path)
            model = self.from_pretrained(path, dtype, arch)
            model.eval()
            info = self.describe(model, arch, dtype)
        if islands == "widened" and id(model) not in self.ropes:
            self.ropes[id(model)] = exact_rope(self.torch, model)
        if islands == "widened":
            info["rope_recomputed"] = [f"{type(m).__name__}.{n}" for m, n, _, _ in self.ropes[id(model)]]
        info["islands"] = islands
        h = len(self.models)
        self.models[h] = (model, info["vocab"], info, islands)
        self.handles[(key, islands)] = h
        return {"ok": True, "handle": h, **info}

    def from_pretrained(self, path, dtype, arch):
        # Eager attention and eager experts: the plain loops are the definition (the grouped
        # matmul of the mixture-of-experts modules refuses float64 on the CPU).
        kwargs = {
            "dtype": self.torch.float64 if dtype == "f64" else self.torch.float32,
            "attn_implementation": "eager",
            "experts_implementation": "eager",
        }
        overrides = {}
        if os.path.isdir(path):
            where = path
        else:
            where, kwargs["gguf_file"] = os.path.split(os.path.abspath(path))
        log = LogTail(self.transformers)
        try:
            if "gguf_file" in kwargs:
                kwargs["config"], overrides = gguf_config(
                    self.transformers, where, kwargs["gguf_file"])
            model, loading = self.transformers.AutoModelForCausalLM.from_pretrained(
                where, output_loading_info=True, **kwargs
            )
        except (ValueError, KeyError, NotImplementedError) as e:
            text = str(e)
            if isinstance(e, KeyError) or any(w in text for w in UNSUPPORTED_WORDS):
                raise Unsupported(arch, f"{type(e).__name__}: {text}") from e
            raise LoadFailed(f"{type(e).__name__}: {text}{log.text()}") from e
        except Exception as e:
            # transformers logs what it refused (a load report of mismatched shapes) before it
            # raises "see the report above": the report belongs in the error.
            raise LoadFailed(f"{type(e).__name__}: {e}{log.text()}") from e
        finally:
            log.close()
        # A weight the checkpoint lacks is initialized at random: never a reference.
        missing = sorted(loading.get("missing_keys") or [])
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise Unsupported(arch, f"{type(model).__name__} needs weights these files lack "
                                    f"(transformers would initialize them at random): {shown}")
        model.driftsweep_unexpected = sorted(loading.get("unexpected_keys") or [])
        model.driftsweep_overrides = overrides
        return model

    def describe(self, model, arch, dtype):
        """The load's answer: class, architecture, vocabulary, and every parameter or buffer
        held in another dtype than the one asked for (the rotary frequencies stay float32)."""
        want = self.torch.float64 if dtype == "f64" else self.torch.float32
        vocab = int(model.get_output_embeddings().weight.shape[0])
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        others = {
            name: str(t.dtype).replace("torch.", "")
            for name, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_floating_point() and t.dtype != want
        }
        packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
        return {
            "class": type(model).__name__,
            "arch": arch or getattr(model.config, "model_type", None),
            "vocab": vocab,
            "config_vocab": int(getattr(cfg, "vocab_size", None) or vocab),
            "other_dtypes": others,
            "packed_modules": packed,
            "unexpected_keys": getattr(model, "driftsweep_unexpected", []),
            "config_overrides": getattr(model, "driftsweep_overrides", {}),
        }

    def forward(self, req, ids):
        h = req.get("handle")
        if h not in self.models:
            raise BadRequest(f"unknown handle {h!r}")
        model, vocab, info, islands = self.models[h]
        set_rope(self.ropes.get(id(model), []), islands == "widened")
        limit = min(vocab, info["config_vocab"])
        if len(ids) == 0:
            raise BadRequest("forward needs at least one token id")
        bad = [i for i in ids if i >= limit]
        if bad:
            raise BadRequest(f"token id {bad[0]} is outside the vocabulary of {limit}")
        torch = self.torch
        x = torch.tensor([list(ids)], dtype=torch.long)
        with torch.no_grad(), (Widened(torch) if islands == "widened" else contextlib.nullcontext()):
            logits = model(input_ids=x, use_cache=False).logits[0]
        if logits.dtype == torch.float64:
            elem, arr = "f64", logits.contiguous().numpy().astype("<f8", copy=False)
        else:
            elem, arr = "f32", logits.float().contiguous().numpy().astype("<f4", copy=False)
        n, v = arr.shape
        header = {"ok": True, "n": int(n), "vocab": int(v), "elem": elem, "bytes": int(arr.nbytes)}
        return header, arr.tobytes()


def serve(out, inp, worker):
    while True:
        line = inp.readline(MAX_HEADER + 1)
        if not line:
            return
        if len(line) > MAX_HEADER or not line.endswith(b"\n"):
            send(out, {"ok": False, "kind": "bad_request", "message": "header line too long or cut"})
            return
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            send(out, {"ok": False, "kind": "bad_request", "message": f"header is not JSON: {e}"})
            continue
        op = req.get("op")
        ids = None
        if op == "forward":
            n = req.get("n")
            if not isinstance(n, int) or n < 0 or n > MAX_IDS:
                # The payload's length is unknown: nothing after it can be read.
                send(out, {"ok": False, "kind": "bad_request", "message": f"bad id count {n!r}"})
                return
            try:
                ids = struct.unpack(f"<{n}I", read_exact(inp, 4 * n))
            except EOFError as e:
                print(f"worker: {e}", file=sys.stderr)
                return
        try:
            if op == "load":
                send(out, worker.load(req))
            elif op == "forward":
                send(out, *worker.forward(req, ids))
            elif op == "quit":
                send(out, {"ok": True})
                return
            else:
                raise BadRequest(f"unknown op {op!r}")
        except BadRequest as e:
            send(out, {"ok": False, "kind": "bad_request", "message": str(e)})
        except Unsupported as e:
            send(out, {"ok": False, "kind": "unsupported", "arch": e.arch, "message": str(e)})
        except LoadFailed as e:
            traceback.print_exc(file=sys.stderr)
            send(out, {"ok": False, "kind": "error", "message": str(e)})
        except Exception as e:  # noqa: BLE001 - every failure goes back as a frame
            traceback.print_exc(file=sys.stderr)
            send(out, {"ok": False, "kind": "error", "message": f"{type(e).__name__}: {e}"})


def main():
    out = frames_out()
    inp = sys.stdin.buffer
    try:
        import torch
        import transformers
    except Exception as e:  # noqa: BLE001
        send(out, {"ok": False, "kind": "not_installed", "message": f"{type(e).__name__}: {e}"})
        return
    threads = int(os.environ.get("DRIFTSWEEP_TRANSFORMERS_THREADS", "2"))
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_warning()
    print(
        f"worker: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{threads} threads",
        file=sys.stderr,
        flush=True,
    )
    send(out, {"ok": True, "hello": HELLO, "torch": torch.__version__,
               "transformers": transformers.__version__, "threads": threads})
    serve(out, inp, Worker(torch, transformers))


if __name__ == "__main__":
    main()
