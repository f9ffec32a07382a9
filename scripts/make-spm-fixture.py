#!/usr/bin/env python3
"""Writes runtime-node/tests/data/spm_fixture.json: a tiny SentencePiece BPE model and what
Google's `sentencepiece` makes of a set of test strings, so the engine's GGUF "llama" tokenizer
is checked against an implementation we did not write.

The model is trained with Llama-2's settings (BPE, byte fallback, dummy prefix, identity
normalisation, spaces never collapsed, digits split) on a small embedded multilingual text.
Pieces are written in GGUF convention: `tokenizer.ggml.tokens`, `.scores` and `.token_type`
(1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).

Every string is also encoded with the dummy prefix turned off, as Gemma's GGUF files
(`tokenizer.ggml.add_space_prefix = false`) ask.

Usage: python3 -m venv /tmp/spm && /tmp/spm/bin/pip install sentencepiece==0.2.3 protobuf &&
       /tmp/spm/bin/python scripts/make-spm-fixture.py
"""

import io
import json
import pathlib
import random

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "runtime-node/tests/data/spm_fixture.json"

# 256 byte pieces, 3 control ones and ~170 characters leave ~270 merged pieces.
VOCAB_SIZE = 700

# Training text: several scripts, digits, punctuation and one emoji, so most characters have
# pieces of their own; the test strings below add characters it never saw (byte fallback).
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!
A tokenizer turns text into tokens, and tokens back into text.
Hello world! Hello there, how are you today? I am fine, thank you.
In 2023 the model read 1,234,567 tokens in 89.5 seconds (about 13,793 tokens per second).
Prices: $4.99, 12% off, 3/4 cup, 100 km/h, 7 + 8 = 15, 2^10 = 1024.
Email me at someone@example.com or visit https://example.com/path?query=1&lang=en.
def main(): print("hello, world") # a comment
for i in range(10): total += i * 2
Le café est très bon à Paris, et la crème brûlée aussi. Où est la bibliothèque ?
Ça va très bien, merci ! Les élèves étudient les mathématiques et la géographie.
Der Bär läuft über die Straße. Grüße aus München, schöne Größe, Mädchen und Jungen.
El niño come una manzana en la mañana. ¿Dónde está la estación? ¡Qué día tan bonito!
Ο γρήγορος καφέ αλεπού πηδά πάνω από το τεμπέλικο σκυλί.
Быстрая коричневая лиса прыгает через ленивую собаку.
我们今天去公园散步。天气很好，我们很开心。
東京は日本の首都です。今日はいい天気ですね。
The weather is nice today 🙂 and we are happy 🙂.
tokens tokens tokens text text text the the the and and and
Spaces  matter   here, and    so do tabs.
Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10, 11, 12 appear often.
Machine learning models read tokens, not characters or words.
Once upon a time there was a little model that learned to read and write.
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
"""

# Hand-picked cases (the corpus lines and `mixed_strings` follow them in the fixture); each is
# encoded without BOS/EOS and decoded back.
TEST_STRINGS = [
    "",
    "Hello world",
    "Hello world!",
    " Hello",
    "  two leading spaces",
    "multiple   spaces   between",
    "trailing space ",
    "line one\nline two\n",
    "\n",
    "tabs\tand\ttabs",
    "The year 2024 has 366 days; pi is 3.14159.",
    "café crème brûlée à Paris",
    "Straße über München",
    "¿Dónde está el niño?",
    "我们今天很开心",
    "東京の天気",
    "unseen: 한국어 Ελληνικά ✓ ∑",
    "emoji 🙂 and unseen 🚀🦀",
    "def f(x): return x * 2  # comment",
    "The quick brown fox jumps over the lazy dog.",
    "tokens, tokens and more tokens",
    "a",
    " ",
]



def mixed_strings(count: int) -> list[str]:
    """Deterministic jumbles of the corpus's words and unseen characters with irregular
    whitespace, where merges interact in ways the hand-written strings may not reach."""
    rng = random.Random(2)
    words = CORPUS.split() + ["ß", "ñ", "水", "🦀", "€", "Ω", "x"]
    separators = [" ", " ", " ", "  ", "", "\n", "\t", "   "]
    return [
        "".join(rng.choice(words) + rng.choice(separators) for _ in range(rng.randint(1, 12)))
        for _ in range(count)
    ]


# GGUF token types (llama.cpp `llama_token_type`).
NORMAL, UNKNOWN, CONTROL, UNUSED, BYTE = 1, 2, 3, 5, 6


def train() -> bytes:
    """Trains the model in memory with Llama-2's normaliser and trainer options; returns the
    serialised model."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=0.995,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def without_space_prefix(model: bytes) -> spm.SentencePieceProcessor:
    """The same model with `add_dummy_prefix` off: no `▁` before the text."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def cases(sp: spm.SentencePieceProcessor, strings: list[str]) -> list[dict]:
    """What `sp` encodes (no BOS/EOS) for each string, and decodes back."""
    encoded = [(s, sp.encode(s)) for s in strings]
    return [{"text": s, "ids": ids, "decoded": sp.decode(ids)} for s, ids in encoded]


def token_type(sp: spm.SentencePieceProcessor, i: int) -> int:
    """The GGUF token type of piece `i`, as llama.cpp's converter assigns it."""
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_byte(i):
        return BYTE
    if sp.is_unused(i):
        return UNUSED
    return NORMAL


def main() -> None:
    model = train()
    sp = spm.SentencePieceProcessor(model_proto=model)
    pieces = [
        [sp.id_to_piece(i), sp.get_score(i), token_type(sp, i)] for i in range(sp.get_piece_size())
    ]
    strings = TEST_STRINGS + CORPUS.splitlines() + mixed_strings(25)
    with_prefix = cases(sp, strings)
    no_prefix = cases(without_space_prefix(model), strings)
    # One piece and one case a line: small diffs when the generator changes.
    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = [
        "{",
        f'  "generator": {dump("scripts/make-spm-fixture.py, sentencepiece " + spm.__version__)},',
        f'  "bos_token_id": {sp.bos_id()},',
        f'  "eos_token_id": {sp.eos_id()},',
        f'  "unknown_token_id": {sp.unk_id()},',
        '  "pieces": [',
        ",\n".join(f"    {dump(p)}" for p in pieces),
        "  ],",
        '  "cases": [',
        ",\n".join(f"    {dump(c)}" for c in with_prefix),
        "  ],",
        '  "cases_without_space_prefix": [',
        ",\n".join(f"    {dump(c)}" for c in no_prefix),
        "  ]",
        "}",
    ]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fallback = sum(any(token_type(sp, i) == BYTE for i in c["ids"]) for c in with_prefix)
    print(f"wrote {OUTPUT}: {len(pieces)} pieces, {len(strings)} strings ({fallback} use byte fallback)")


if __name__ == "__main__":
    main()
