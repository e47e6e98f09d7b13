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
    {"op": "load", "path": P, "dtype": "f32"|"f64"}
        P is a Hugging Face directory (config.json + safetensors) or a GGUF file (read by
        transformers' own GGUF loader, `gguf_file=`). Loads once per (path, dtype) and keeps
        the model. Answer: {"ok": true, "handle": H, "class": ..., "arch": ..., "vocab": V}.
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
ROPES = ("as_shipped", "f64")


class BadRequest(Exception):
    """The request itself is wrong (bad_request)."""


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


def exact_rope(torch, model, switch):
    """Makes every rotary embedding of `model` compute its cos/sin table in float64.

    transformers computes the table in float32 whatever the model's dtype (the inverse
    frequencies are made with dtype=torch.float, and `forward` multiplies positions by them in
    float32), so a float64 model still rotates by angles rounded to float32: logits move by
    about 1e-6 relative. With this the angles are float64 too. Only the default RoPE (no
    scaling) is recomputed; the float64 frequencies must round to the module's own float32
    ones, or the load is refused. The float64 table is used while switch["f64"] is true, the
    module's own otherwise (one loaded model serves both). Returns the number of modules
    changed."""
    changed = 0
    for mod in model.modules():
        if not type(mod).__name__.endswith("RotaryEmbedding"):
            continue
        cfg = mod.config
        kinds = getattr(mod, "layer_types", None)
        per_type = isinstance(kinds, list)
        inv = {}
        for kind in kinds if per_type else [None]:
            name = f"{kind}_inv_freq" if per_type else "inv_freq"
            if not hasattr(mod, name):
                continue
            params = cfg.rope_parameters[kind] if per_type else cfg.rope_parameters
            if params.get("rope_type", "default") != "default":
                raise BadRequest(f"rope f64: {type(mod).__name__} uses rope_type {params['rope_type']}, "
                                 "only the default RoPE is recomputed")
            ours = getattr(mod, name)
            dim = 2 * ours.shape[0]
            theirs = 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            if not torch.allclose(theirs.float(), ours.float(), rtol=1e-6, atol=0):
                raise BadRequest(f"rope f64: the recomputed frequencies of {type(mod).__name__} "
                                 "differ from its own")
            inv[kind] = theirs
        if not inv:
            continue

        def forward(x, position_ids, layer_type=None, mod=mod, inv=inv, per_type=per_type,
                    own=mod.forward):
            if not switch["f64"]:
                return own(x, position_ids, layer_type) if per_type else own(x, position_ids)
            kind = layer_type if per_type else None
            scale = getattr(mod, f"{kind}_attention_scaling" if per_type else "attention_scaling", 1.0)
            freqs = position_ids[..., None].to(torch.float64) * inv[kind].to(x.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)

        mod.forward = forward
        changed += 1
    return changed


class Worker:
    def __init__(self, torch, transformers):
        self.torch = torch
        self.transformers = transformers
        self.models = {}  # handle -> (model, vocab, load answer, rope)
        self.handles = {}  # ((realpath, dtype), rope) -> handle
        self.switches = {}  # id(model) -> the switch of its float64 rotary table

    def load(self, req):
        path, dtype, rope = req.get("path"), req.get("dtype"), req.get("rope", "as_shipped")
        if not isinstance(path, str) or dtype not in DTYPES:
            raise BadRequest(f"load needs a string `path` and a `dtype` in {DTYPES}")
        if rope not in ROPES:
            raise BadRequest(f"load's `rope` must be one of {ROPES}, not {rope!r}")
        if not os.path.exists(path):
            raise BadRequest(f"{path}: no such file or directory")
        key = (os.path.realpath(path), dtype)
        if (key, rope) in self.handles:
            h = self.handles[(key, rope)]
            return {"ok": True, "handle": h, **self.models[h][2]}
        # Both rope variants of one (path, dtype) share the model: a load is the slow part.
        same = [h for (k, _), h in self.handles.items() if k == key]
        if same:
            model, _, info, _ = self.models[same[0]]
            info = dict(info)
        else:
            arch = arch_of(path)
            model = self.from_pretrained(path, dtype, arch)
            model.eval()
            info = self.describe(model, arch, dtype)
        if rope == "f64":
            if id(model) not in self.switches:
                switch = {"f64": False}
                info["rope_f64_modules"] = exact_rope(self.torch, model, switch)
                self.switches[id(model)] = switch
        info["rope"] = rope
        h = len(self.models)
        self.models[h] = (model, info["vocab"], info, rope)
        self.handles[(key, rope)] = h
        return {"ok": True, "handle": h, **info}

    def from_pretrained(self, path, dtype, arch):
        # Eager attention and eager experts: the plain loops are the definition (the grouped
        # matmul of the mixture-of-experts modules refuses float64 on the CPU).
        kwargs = {
            "dtype": self.torch.float64 if dtype == "f64" else self.torch.float32,
            "attn_implementation": "eager",
            "experts_implementation": "eager",
        }
        if os.path.isdir(path):
            where = path
        else:
            where, kwargs["gguf_file"] = os.path.split(os.path.abspath(path))
        log = LogTail(self.transformers)
        try:
            return self.transformers.AutoModelForCausalLM.from_pretrained(where, **kwargs)
        except (ValueError, KeyError, NotImplementedError) as e:
            text = str(e)
            if isinstance(e, KeyError) or any(w in text for w in UNSUPPORTED_WORDS):
                raise Unsupported(arch, f"{type(e).__name__}: {text}") from e
            raise RuntimeError(f"{type(e).__name__}: {text}{log.text()}") from e
        except Exception as e:
            # transformers logs what it refused (a load report of mismatched shapes) before it
            # raises "see the report above": the report belongs in the error.
            raise RuntimeError(f"{type(e).__name__}: {e}{log.text()}") from e
        finally:
            log.close()

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
        }

    def forward(self, req, ids):
        h = req.get("handle")
        if h not in self.models:
            raise BadRequest(f"unknown handle {h!r}")
        model, vocab, info, rope = self.models[h]
        switch = self.switches.get(id(model))
        if switch is not None:
            switch["f64"] = rope == "f64"
        limit = min(vocab, info["config_vocab"])
        if len(ids) == 0:
            raise BadRequest("forward needs at least one token id")
        bad = [i for i in ids if i >= limit]
        if bad:
            raise BadRequest(f"token id {bad[0]} is outside the vocabulary of {limit}")
        torch = self.torch
        with torch.no_grad():
            x = torch.tensor([list(ids)], dtype=torch.long)
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
