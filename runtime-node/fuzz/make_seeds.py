#!/usr/bin/env python3
"""Writes the seed corpora: tiny valid GGUF and safetensors files (and the first bytes of the
SmolLM2 GGUF when $HEARTH_SMOLLM2_GGUF names it), and a handful of inputs in each text target's
format (see each target's doc comment). Deterministic; the output is checked in."""

import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, v):
    """(type code, payload) for a metadata value."""
    if kind == "u32":
        return 4, struct.pack("<I", v)
    if kind == "f32":
        return 6, struct.pack("<f", v)
    if kind == "bool":
        return 7, struct.pack("<B", int(v))
    if kind == "str":
        return 8, gguf_string(v)
    if kind == "strs":
        return 9, struct.pack("<IQ", 8, len(v)) + b"".join(gguf_string(x) for x in v)
    if kind == "i32s":
        return 9, struct.pack("<IQ", 5, len(v)) + b"".join(struct.pack("<i", x) for x in v)
    raise ValueError(kind)


def gguf(metadata, tensors, alignment=32):
    """A GGUF v3 file; tensors are (name, dims, ggml type, raw bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, (kind, v) in metadata.items():
        code, payload = gguf_value(kind, v)
        out += gguf_string(key) + struct.pack("<I", code) + payload
    offset = 0
    data = b""
    for name, dims, ggml_type, raw in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        pad = (-len(raw)) % alignment
        data += raw + b"\0" * pad
        offset += len(raw) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + data


def f32s(n, scale=0.01):
    return b"".join(struct.pack("<f", scale * ((i * 37) % 11 - 5)) for i in range(n))


def tiny_llama():
    hidden, heads, kv, ff, vocab = 8, 2, 1, 16, 6
    tokens = ["a", "b", "c", "ab", "<s>", "</s>"]
    metadata = {
        "general.architecture": ("str", "llama"),
        "llama.embedding_length": ("u32", hidden),
        "llama.attention.head_count": ("u32", heads),
        "llama.attention.head_count_kv": ("u32", kv),
        "llama.feed_forward_length": ("u32", ff),
        "llama.block_count": ("u32", 1),
        "llama.context_length": ("u32", 64),
        "llama.rope.freq_base": ("f32", 10000.0),
        "llama.attention.layer_norm_rms_epsilon": ("f32", 1e-5),
        "tokenizer.ggml.model": ("str", "gpt2"),
        "tokenizer.ggml.pre": ("str", "smollm"),
        "tokenizer.ggml.tokens": ("strs", tokens),
        "tokenizer.ggml.merges": ("strs", ["a b"]),
        "tokenizer.ggml.token_type": ("i32s", [1, 1, 1, 1, 3, 3]),
        "tokenizer.ggml.bos_token_id": ("u32", 4),
        "tokenizer.ggml.eos_token_id": ("u32", 5),
        "tokenizer.ggml.add_bos_token": ("bool", False),
        "tokenizer.chat_template": ("str", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    }
    head_dim = hidden // heads
    tensors = [
        ("token_embd.weight", [hidden, vocab], 0, f32s(hidden * vocab)),
        ("output_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.attn_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.ffn_norm.weight", [hidden], 0, f32s(hidden, 1.0)),
        ("blk.0.attn_q.weight", [hidden, hidden], 0, f32s(hidden * hidden)),
        ("blk.0.attn_k.weight", [hidden, kv * head_dim], 0, f32s(hidden * kv * head_dim)),
        ("blk.0.attn_v.weight", [hidden, kv * head_dim], 0, f32s(hidden * kv * head_dim)),
        ("blk.0.attn_output.weight", [hidden, hidden], 0, f32s(hidden * hidden)),
        ("blk.0.ffn_gate.weight", [hidden, ff], 0, f32s(hidden * ff)),
        ("blk.0.ffn_up.weight", [hidden, ff], 0, f32s(hidden * ff)),
        ("blk.0.ffn_down.weight", [ff, hidden], 0, f32s(hidden * ff)),
        # One quantized tensor: Q8_0 blocks are 32 values in 34 bytes.
        ("extra.q8.weight", [32, 1], 8, struct.pack("<e", 0.5) + bytes(range(32))),
    ]
    return gguf(metadata, tensors)


def safetensors(tensors):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


SECTION, FIELD = "\x1e", "\x1f"

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def requests():
    """Bodies of both generation endpoints: plain, every field, and boundary values."""
    bodies = {
        "chat_plain": CHAT,
        "chat_every_field": {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "{{ bos_token }}<|im_end|>"}]},
                {"role": "assistant", "content": None},
                {"role": "tool", "content": "42"},
            ],
            "max_completion_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "min_p": 0.05,
            "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
            "stop": ["\n\n", "User:"], "stop_token_ids": [2], "ignore_eos": False, "n": 2,
            "stream": True, "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 3,
        },
        "chat_max_tokens_at_the_limit": dict(CHAT, max_tokens=2**64 - 1),
        "completion_text": {"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "echo": True},
        "completion_tokens": {"model": "m", "prompt": [1, 2, 3, 40000], "logprobs": 5, "stop": "."},
        "completion_one_of_many": {"model": "m", "prompt": ["only one"], "suffix": "", "n": 16, "top_k": 5},
    }
    return {f"openai_request/{name}.json": json.dumps(body).encode() for name, body in bodies.items()}


def chat_messages():
    """First byte: bit 0 asks for the generation prompt; then messages `role FIELD content`."""
    cases = {
        "one_user": (1, ["user" + FIELD + "Hello"]),
        "conversation": (0, ["system" + FIELD + "Be brief.", "user" + FIELD + "Hi", "assistant" + FIELD + "Hello!"]),
        "template_syntax": (1, ["user" + FIELD + "{{ raise_exception('x') }}{% for m in messages %}<|im_end|>{# #}"]),
        "helpers": (1, ["date" + FIELD + "%Y-%m-%d %H:%M", "raise" + FIELD + "refused", "user" + FIELD + "  a user b  "]),
        "odd_unicode": (0, ["\u202euser" + FIELD + "e\u0301\u200d\U0001f642\x00\ud7ff\ufeff", FIELD]),
    }
    return {
        f"chat_template/{name}.txt": bytes([flags]) + SECTION.join(messages).encode("utf-8", "surrogatepass")
        for name, (flags, messages) in cases.items()
    }


def tokenizer_texts():
    texts = {
        "english": "Hello world, the king's thing and 1234567890.",
        "unicode": "Unicode: caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \U0001f642",
        "chatml": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "whitespace": "  two  spaces\n\n\ttab    four\r\n",
        "sentencepiece_markers": "<s> x </s>\u2581y<unk>",
    }
    files = {f"tokenizer/{name}.txt": text.encode() for name, text in texts.items()}
    files["tokenizer/invalid_utf8.bin"] = b"ok \xff\xfe \xe6\x97 cut \xf0\x9f\x99"
    return files


def stop_cases():
    """First section: stop strings split on FIELD; then the streamed pieces."""
    cases = {
        "split_across_pieces": (["\n\n"], ["Hello", "\n", "\nWorld"]),
        "near_miss": (["STOP"], ["a ST", "ART b"]),
        "earliest_wins": (["c", "b", "abcd"], ["ab", "cd"]),
        "multibyte": (["\u65e5\u672c", "\u00e9"], ["x\u65e5", "\u672cy"]),
        "no_stop": ([""], ["free ", "text"]),
    }
    return {
        f"stop_matcher/{name}.txt": SECTION.join([FIELD.join(stops)] + pieces).encode()
        for name, (stops, pieces) in cases.items()
    }


def sse(*events, crlf=False):
    end = "\r\n\r\n" if crlf else "\n\n"
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}{end}" for e in events).encode()


def chunk(delta):
    return {"model": "m", "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}


USAGE = {"model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def bodies():
    """Engine response bodies, shared by the meter's and the gateway's targets."""
    return {
        "stream_with_usage": sse(chunk("Hi"), chunk(" there"), USAGE, "[DONE]"),
        "stream_crlf_without_usage": sse({"choices": [{"text": "a"}]}, {"choices": [{"text": ""}]}, "[DONE]", crlf=True),
        "json": json.dumps({"model": "m", "choices": [], "usage": USAGE["usage"]}).encode(),
        "stream_cut": sse(chunk("Hi"))[:-1] + b'data: {"usage": {"prompt_tokens": 1',
    }


def meter_bodies():
    """First byte: how many chunk sizes follow; then the sizes; then the body."""
    files = {f"meter_sse/{name}.bin": bytes([2, 7, 3]) + body for name, body in bodies().items()}
    files["meter_sse/request.bin"] = bytes([0]) + json.dumps(CHAT).encode()
    return files


def gateway_bodies():
    """First byte: chunk-size count in bits 0-2, mode in bits 3-6; then the sizes; the body."""
    flags = {"stream_with_usage": 0x10, "stream_crlf_without_usage": 0x00, "json": 0x08, "stream_cut": 0x20}
    return {
        f"gateway_sse/{name}.bin": bytes([flags[name] | 2, 5, 11]) + body for name, body in bodies().items()
    }


def usage_record(sequence, request_id):
    record = {
        "requestId": request_id, "tenant": "ns/acme", "tier": "gold", "model": "m", "promptTokens": 3,
        "completionTokens": 5, "estimated": False, "status": 200, "streamed": True,
        "startedAtMs": 1, "finishedAtMs": 2,
    }
    return json.dumps({"sequence": sequence, "record": record}).encode()


def ledger_segments():
    """Flags, acked cursor, first sequence, then `tag, u16 length, bytes` chunks (odd tag: raw)."""

    def chunk(raw, data):
        return bytes([1 if raw else 0]) + struct.pack("<H", len(data)) + data

    def framed(data):
        return struct.pack("<II", len(data), zlib.crc32(data)) + data

    two = chunk(False, usage_record(1, "a")) + chunk(False, usage_record(2, "b"))
    return {
        "ledger_replay/two_records.bin": bytes([0]) + struct.pack("<QQ", 0, 1) + two,
        "ledger_replay/torn_tail.bin": bytes([0]) + struct.pack("<QQ", 0, 1) + two
        + chunk(True, bytes([200, 0, 0, 0, 1, 2, 3, 4]) + b'{"'),
        "ledger_replay/acked_first.bin": bytes([1]) + struct.pack("<QQ", 1, 1) + two,
        "ledger_replay/bad_checksum_then_record.bin": bytes([0]) + struct.pack("<QQ", 0, 3)
        + chunk(True, framed(usage_record(3, "c"))[:-2] + b"xx") + chunk(False, usage_record(4, "d")),
    }


def local_configs():
    examples = os.path.join(HERE, "..", "..", "examples", "local")
    documents = []
    for name in ["tier.yaml", "tenant.yaml", "model.yaml"]:
        with open(os.path.join(examples, name)) as f:
            documents.append(f.read())
    example = "---\n".join(documents).replace("${SMOLLM2_GGUF}", "${HEARTH_FUZZ_MODEL}")
    model = "kind: InferenceModel\nmetadata: {name: m}\nspec: {servedName: m, source: {uri: 'file://${HEARTH_FUZZ_MODEL}'}}\n"
    return {
        "local_config/example.yaml": example.encode(),
        "local_config/unknown_tier.yaml": (model + "---\nkind: Tenant\nmetadata: {name: t}\nspec: {tierRef: gold}\n").encode(),
        "local_config/variables.yaml": (
            "kind: InferenceModel\nmetadata: {name: '${HEARTH_FUZZ_UNICODE}'}\n"
            "spec: {servedName: '${HEARTH_FUZZ_NESTED}${HEARTH_FUZZ_EMPTY}', source: {uri: '${HEARTH_FUZZ_YAML}'}, "
            "replicas: {min: 3, max: 1}}\n---\n${UNSET_ON_PURPOSE\n"
        ).encode(),
    }


def main():
    corpus = os.path.join(HERE, "corpus")
    files = {
        "gguf_header/tiny_llama.gguf": tiny_llama(),
        "gguf_header/empty_v3.gguf": gguf({}, []),
        "safetensors_header/tiny.safetensors": safetensors({
            "model.embed_tokens.weight": ("F32", [2, 3], f32s(6)),
            "model.norm.weight": ("F16", [3], struct.pack("<3e", 1.0, 0.5, -2.0)),
            "lm_head.weight": ("BF16", [1, 2], b"\x80\x3f\x00\x40"),
            "ids": ("I64", [2], struct.pack("<2q", 1, -1)),
            "mask": ("U8", [3], b"\x00\x01\x02"),
        }),
        "safetensors_header/empty.safetensors": safetensors({}),
    }
    for seeds in [requests, chat_messages, tokenizer_texts, stop_cases, meter_bodies, gateway_bodies,
                  ledger_segments, local_configs]:
        files.update(seeds())
    smollm2 = os.environ.get("HEARTH_SMOLLM2_GGUF")
    if smollm2 and os.path.exists(smollm2):
        with open(smollm2, "rb") as f:
            files["gguf_header/smollm2_first_16k.gguf"] = f.read(16 * 1024)
    for name, data in files.items():
        path = os.path.join(corpus, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
