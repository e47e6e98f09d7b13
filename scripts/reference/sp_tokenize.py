"""Reference tokenization of a GGUF file whose tokenizer.ggml.model is `llama` (SentencePiece
tokens with scores; Gemma 3), by Google's own SentencePiece library rather than by
driftsweep's code: the file's tokens, scores and token types are written into a SentencePiece
BPE model (a ModelProto), which then encodes the strings.

    python scripts/reference/sp_tokenize.py MODEL.gguf STRINGS.json OUT.json

STRINGS.json is a JSON list of strings; OUT.json gets the list of their id lists (no BOS).
Needs `sentencepiece` and `protobuf` besides gguf (scripts/reference/requirements-tokenize.txt).

The model: type BPE with byte fallback, identity normalization, spaces escaped to U+2581, no
dummy prefix (tokenizer.ggml.add_space_prefix), extra whitespace kept; GGUF token types map to
SentencePiece piece types one to one (1 normal, 3 control, 4 user-defined, 6 byte), except
that the unknown token (tokenizer.ggml.unknown_token_id) is SentencePiece's UNKNOWN piece.
"""

import json
import sys

import sentencepiece as spm
from gguf import GGUFReader
from sentencepiece import sentencepiece_model_pb2 as pb


def model_proto(path):
    r = GGUFReader(path)
    f = r.fields
    if f["tokenizer.ggml.model"].contents() != "llama":
        sys.exit("tokenizer.ggml.model is not `llama`")
    tokens = f["tokenizer.ggml.tokens"].contents()
    scores = f["tokenizer.ggml.scores"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    unk = f["tokenizer.ggml.unknown_token_id"].contents()
    prefix = f.get("tokenizer.ggml.add_space_prefix")
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.unk_id = unk
    m.trainer_spec.bos_id = f["tokenizer.ggml.bos_token_id"].contents()
    m.trainer_spec.eos_id = f["tokenizer.ggml.eos_token_id"].contents()
    pad = f.get("tokenizer.ggml.padding_token_id")
    m.trainer_spec.pad_id = pad.contents() if pad is not None else -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(prefix.contents()) if prefix is not None else True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for i, (t, s, ty) in enumerate(zip(tokens, scores, types)):
        p = m.pieces.add()
        p.piece = t
        p.score = float(s)
        p.type = pb.ModelProto.SentencePiece.UNKNOWN if i == unk else int(ty)
    return m


def main():
    model, strings, out = sys.argv[1:4]
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model_proto(model).SerializeToString())
    texts = json.load(open(strings, encoding="utf-8"))
    json.dump([sp.EncodeAsIds(t) for t in texts], open(out, "w"))


if __name__ == "__main__":
    main()
