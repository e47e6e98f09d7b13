"""Reference tokenizations of a GGUF file whose tokenizer.ggml.model is `llama` (SentencePiece
tokens with scores; Gemma 3), by code other than driftsweep's: the file's tokens, scores and
token types are written into a SentencePiece BPE model (a ModelProto), which then encodes the
strings with one of two engines:

- `transformers`: transformers' own GemmaConverter turns the model into the `tokenizers`
  tokenizer that Gemma's tokenizer.json holds (how transformers users tokenize Gemma);
- `sentencepiece`: Google's SentencePiece library encodes with the model itself.

They differ on runs of spaces: the vocabulary's whitespace tokens ("  ", "   ", ...) are
user-defined pieces spelled with plain spaces; transformers (and llama.cpp) match them in the
raw text, SentencePiece escapes spaces to U+2581 first and never matches them (each space
becomes "▁").

    python scripts/reference/ref_tokenize.py MODEL.gguf STRINGS.json OUT.json [ENGINE]

STRINGS.json is a JSON list of strings; OUT.json gets the list of their id lists (no BOS).
ENGINE is `transformers` (default) or `sentencepiece`. Needs sentencepiece, protobuf and
transformers besides gguf (scripts/reference/requirements-tokenize.txt).

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


def transformers_tokenizer(model_file, tokens, unk):
    from transformers.convert_slow_tokenizer import GemmaConverter, GemmaSentencePieceExtractor

    class Extractor(GemmaSentencePieceExtractor):
        # transformers 5.24's GemmaSentencePieceExtractor reads `self.sp` without setting it.
        def __init__(self, model):
            super().__init__(model)
            self.sp = spm.SentencePieceProcessor(model_file=model)

    class Original:
        """What GemmaConverter reads of a slow tokenizer."""

        vocab_file = model_file
        pad_token, eos_token, bos_token = tokens[0], tokens[1], tokens[2]
        add_bos_token = False
        add_eos_token = False
        legacy = True

    GemmaConverter.SpmExtractor = Extractor
    tok = GemmaConverter(Original()).converted()
    # A transformers tokenizer registers its unk_token as a special token too (the converter
    # adds control and user-defined pieces; <unk> is SentencePiece's UNKNOWN piece).
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(unk, special=True, normalized=False)])
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def main():
    model, strings, out = sys.argv[1:4]
    engine = sys.argv[4] if len(sys.argv) > 4 else "transformers"
    proto = model_proto(model)
    if engine == "sentencepiece":
        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(proto.SerializeToString())
        encode = sp.EncodeAsIds
    elif engine == "transformers":
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".model")
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        try:
            pieces = [p.piece for p in proto.pieces[:3]]
            unk = proto.pieces[proto.trainer_spec.unk_id].piece
            encode = transformers_tokenizer(path, pieces, unk)
        finally:
            os.unlink(path)
    else:
        sys.exit(f"unknown engine {engine} (transformers, sentencepiece)")
    texts = json.load(open(strings, encoding="utf-8"))
    json.dump([encode(t) for t in texts], open(out, "w"))


if __name__ == "__main__":
    main()
