"""Which conformance architectures the transformers reference reads: makes every synthetic model
of configs/conformance.yaml with `driftsweep synth`, loads each through the worker
(transformers_worker.py) in float64 and float32, runs one forward of 20 ids, and prints one
markdown row per model (docs/results/transformers_support.md).

    .peer-venv/bin/python scripts/reference/transformers_support.py target/release/driftsweep

Per model: the transformers class, or the error the load gave; the f32 against f64 max |diff|
of the logits; how far widening the float32 islands moves the float64 logits (relative to the
largest logit); what the worker reported in another dtype than asked and what it recomputed.
"""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Worker:
    def __init__(self):
        script = open(os.path.join(HERE, "transformers_worker.py")).read()
        self.p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.read()[0].get("hello")

    def read(self):
        h = json.loads(self.p.stdout.readline())
        n = h.get("bytes", 0)
        return h, self.p.stdout.read(n) if n else b""

    def ask(self, header, payload=b""):
        self.p.stdin.write((json.dumps(header) + "\n").encode() + payload)
        self.p.stdin.flush()
        return self.read()

    def load(self, path, dtype, islands="as_shipped"):
        return self.ask({"op": "load", "path": path, "dtype": dtype, "islands": islands})[0]

    def forward(self, handle, ids):
        h, b = self.ask({"op": "forward", "handle": handle, "n": len(ids)},
                        struct.pack(f"<{len(ids)}I", *ids))
        if not h.get("ok"):
            return h, None
        elem = "<f8" if h["elem"] == "f64" else "<f4"
        return h, np.frombuffer(b, dtype=elem).reshape(h["n"], h["vocab"]).astype(np.float64)


def specs():
    """(name, spec body) of every synthetic model of configs/conformance.yaml."""
    text = open(os.path.join(ROOT, "configs/conformance.yaml")).read()
    for m in re.finditer(r"^  (\w+): \{synthetic: \{(.*)\}\}$", text, re.M):
        if not m.group(1).startswith("neg_"):
            yield m.group(1), "{" + m.group(2) + "}"


def short(msg, n=160):
    msg = " ".join(msg.split())
    return msg if len(msg) <= n else msg[:n] + "…"


def row(w, name, path):
    ids = list(range(3, 23))
    h = w.load(path, "f64")
    if not h.get("ok"):
        return f"| {name} | {h['kind']}: {short(h['message']).replace('|', '/')} | | | |"
    _, a = w.forward(h["handle"], ids)
    if a is None:
        return f"| {name} | {h['class']}, forward failed | | | |"
    h32 = w.load(path, "f32")
    _, c = w.forward(h32["handle"], ids)
    hw = w.load(path, "f64", "widened")
    if hw.get("ok"):
        fw, d = w.forward(hw["handle"], ids)
        widened = (f"{np.abs(a - d).max() / np.abs(a).max():.1e}" if d is not None
                   else short(fw.get("message", ""), 80))
        recomputed = ", ".join(hw.get("rope_recomputed", [])) or "none"
    else:
        widened, recomputed = short(hw["message"], 80), ""
    others = ", ".join(f"{k}: {v}" for k, v in h["other_dtypes"].items() if "original_inv_freq" not in k)
    return (f"| {name} | {h['class']} | {np.abs(a - c).max():.1e} | {widened} | "
            f"{others or 'none'}; rope recomputed: {recomputed} |")


def main():
    binary = sys.argv[1]
    w = Worker()
    print("| model | transformers class (f64) or error | f32 vs f64 max abs | widened shift | "
          "not in the asked dtype; recomputed |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in specs():
            spec = os.path.join(tmp, name + ".yaml")
            open(spec, "w").write(body + "\n")
            out = os.path.join(tmp, name)
            made = subprocess.run([binary, "synth", spec, "--out", out], capture_output=True, text=True)
            if made.returncode != 0:
                print(f"| {name} | synth failed: {short(made.stderr)} | | | |", flush=True)
                continue
            files = os.listdir(out)
            gguf = [f for f in files if f.endswith(".gguf")]
            path = os.path.join(out, gguf[0]) if gguf else out
            print(row(w, name, path), flush=True)
    w.ask({"op": "quit"})


if __name__ == "__main__":
    main()
