"""The API contract, checked with the official `openai` client against running accelrt servers.

Run by tests/openai_client.rs, which starts an embeddings server and a chat server and writes the
library's own answers to --expected. Exits non-zero, naming the check, on the first failure.
"""

import argparse
import base64
import json
import struct
import sys

import openai


def close(a, b, tol=1e-5):
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= tol


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


def expect_error(kind, status, call, what):
    try:
        call()
    except kind as e:
        check(e.status_code == status, f"{what}: {kind.__name__} with status {status}")
        return
    raise AssertionError(f"{what}: no {kind.__name__}")


def embeddings(url, exp):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    model, texts, want = exp["model"], exp["texts"], exp["vectors"]
    # The client's default asks the server for base64 and decodes it itself.
    r = client.embeddings.create(model=model, input=texts)
    check(len(r.data) == len(texts), "embeddings: one vector per input")
    check(all(close(d.embedding, w) for d, w in zip(r.data, want)), "embeddings (client default, base64) equal the library's")
    check(r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens, "embeddings: usage")
    r = client.embeddings.create(model=model, input=texts, encoding_format="float")
    check(all(close(d.embedding, w) for d, w in zip(r.data, want)), "embeddings (float) equal the library's")
    r = client.embeddings.create(model=model, input=texts[0], encoding_format="base64")
    raw = base64.b64decode(r.data[0].embedding)
    check(close(list(struct.unpack(f"<{len(raw) // 4}f", raw)), want[0]), "embeddings (explicit base64) decode to the library's")
    check(any(m.id == model for m in client.models.list()), "models: lists the served model")
    expect_error(openai.NotFoundError, 404, lambda: client.embeddings.create(model="nope", input="x"), "embeddings: unknown model")
    expect_error(openai.BadRequestError, 400, lambda: client.embeddings.create(model=model, input=[]), "embeddings: empty input")
    expect_error(
        openai.BadRequestError, 400,
        lambda: client.embeddings.create(model=model, input=[[101] * 600]),
        "embeddings: too many tokens (context_length_exceeded)",
    )


def chat(url, exp):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    model, user, n = exp["model"], exp["user"], exp["max_tokens"]
    messages = [{"role": "user", "content": user}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0)
    choice = r.choices[0]
    check(choice.message.content == exp["text"], "chat: the answer equals the library's greedy answer")
    check(choice.finish_reason == exp["finish_reason"], "chat: finish reason")
    check(r.usage.completion_tokens == exp["completion_tokens"], "chat: usage counts the answer's tokens")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "chat: usage total")

    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=n, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == exp["text"], "chat stream: the pieces add up to the same answer")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finishes == [exp["finish_reason"]], "chat stream: one finish reason, at the end")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == exp["completion_tokens"], "chat stream: usage chunk")

    r = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0, stop=[exp["stop"]])
    check(r.choices[0].message.content == exp["text_before_stop"], "chat: a stop string cuts the answer before it")
    check(r.choices[0].finish_reason == "stop", "chat: a stop string finishes with `stop`")

    a = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0.9, seed=7)
    b = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0.9, seed=7)
    check(a.choices[0].message.content == b.choices[0].message.content, "chat: the same seed gives the same sample")

    expect_error(openai.NotFoundError, 404, lambda: client.chat.completions.create(model="gpt-4o", messages=messages), "chat: unknown model")
    expect_error(openai.BadRequestError, 400, lambda: client.chat.completions.create(model=model, messages=[]), "chat: no messages")
    expect_error(
        openai.BadRequestError, 400,
        lambda: client.chat.completions.create(model=model, messages=messages, temperature=5),
        "chat: temperature out of range",
    )
    expect_error(
        openai.BadRequestError, 400,
        lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 4000}]),
        "chat: a prompt longer than the context (context_length_exceeded)",
    )
    # Parameters that would change the output and are not supported are refused, never ignored.
    for what, kwargs in [
        ("logit_bias", {"logit_bias": {"50256": -100}}),
        ("top_logprobs", {"logprobs": False, "top_logprobs": 2}),
        ("legacy functions", {"functions": [{"name": "f", "parameters": {"type": "object", "properties": {}}}]}),
        ("audio modality", {"modalities": ["text", "audio"]}),
        ("an unknown argument", {"extra_body": {"best_of": 2}}),
    ]:
        expect_error(
            openai.BadRequestError, 400,
            lambda: client.chat.completions.create(model=model, messages=messages, max_tokens=2, **kwargs),
            f"chat: {what} is refused",
        )
    # Their no-op values pass, as the client sends them.
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=2, n=1, logprobs=False, presence_penalty=0, frequency_penalty=0,
        user="u", store=False, metadata={"k": "v"}, parallel_tool_calls=True, seed=1, logit_bias={},
    )
    check(r.choices[0].finish_reason in ("length", "stop"), "chat: no-op values of OpenAI's parameters are accepted")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--embeddings-url", required=True)
    p.add_argument("--chat-url", required=True)
    p.add_argument("--expected", required=True)
    a = p.parse_args()
    with open(a.expected) as f:
        exp = json.load(f)
    print(f"openai {openai.__version__}")
    embeddings(a.embeddings_url, exp["embeddings"])
    chat(a.chat_url, exp["chat"])
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
