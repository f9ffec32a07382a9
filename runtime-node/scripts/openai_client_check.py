#!/usr/bin/env python3
"""Drive a running `runtime-node serve` with the official `openai` Python client, unchanged.

Usage: python3 openai_client_check.py BASE_URL MODEL
Exits non-zero (with the reason) on the first failed check. Used by tests/serve_openai_client.rs.
"""

import sys

import openai


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    models = [m.id for m in client.models.list()]
    assert models == [model], models

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=24,
        temperature=0,
    )
    text = chat.choices[0].message.content
    assert text, chat
    assert chat.choices[0].finish_reason in ("stop", "length"), chat
    assert chat.usage.completion_tokens > 0 and chat.usage.prompt_tokens > 0, chat.usage

    pieces, usage, finish = [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(pieces) == text, ("streamed text differs", "".join(pieces), text)
    assert finish == chat.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage

    scored = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    entries = scored.choices[0].logprobs.content
    assert entries and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries), entries
    assert entries[0].token == entries[0].top_logprobs[0].token, entries[0]

    completion = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert completion.choices[0].text.startswith(" 5, 6"), completion
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6, completion.usage

    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=100000
        )
        raise AssertionError("context length not enforced")
    except openai.BadRequestError as err:
        assert err.code == "context_length_exceeded", err.body
        assert "100000" in err.message, err.message

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError:
        pass

    print(f"openai {openai.__version__}: all checks passed; chat answer {text!r}")


if __name__ == "__main__":
    main()
