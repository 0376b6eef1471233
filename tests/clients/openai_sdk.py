"""Switchyard's OpenAI-compatible surface driven by OpenAI's own Python SDK.

Usage: openai_sdk.py BASE_URL API_KEY. Prints one JSON object with what the
SDK made of each answer; the Rust test checks it against the native API.
"""

import json
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)
conversation = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
]

models = [model.id for model in client.models.list()]

whole = client.chat.completions.with_raw_response.create(
    model="assistant", messages=conversation
)
completion = whole.parse()

stream = client.chat.completions.create(
    model="assistant",
    messages=conversation,
    stream=True,
    stream_options={"include_usage": True},
)
streamed, finish_reasons, usage = "", [], None
for chunk in stream:
    for choice in chunk.choices:
        streamed += choice.delta.content or ""
        if choice.finish_reason:
            finish_reasons.append(choice.finish_reason)
    if chunk.usage:
        usage = chunk.usage.total_tokens

try:
    client.chat.completions.create(model="nobody", messages=conversation)
    missing = None
except openai.NotFoundError as error:
    missing = {"status": error.status_code, "code": error.body.get("code")}

print(
    json.dumps(
        {
            "models": models,
            "content": completion.choices[0].message.content,
            "total_tokens": completion.usage.total_tokens,
            "run_id": whole.headers.get("x-switchyard-run-id"),
            "streamed": streamed,
            "finish_reasons": finish_reasons,
            "stream_usage": usage,
            "missing": missing,
        }
    )
)
