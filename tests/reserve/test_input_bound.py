"""The input side of a reservation: exact for OpenAI models, the byte bound elsewhere."""

from __future__ import annotations

import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis_proxy.reserve.input_bound import EXTRA_OVERHEAD, exact_encoding, input_bound
from aegis_proxy.reserve.pricing import input_token_bound

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of Portugal?", "name": "ana"},
]


def test_openai_model_is_counted_with_its_own_encoding() -> None:
    """gpt-4o: 3 per message, 1 per name, 3 to prime, plus every value's o200k tokens."""
    encoding = exact_encoding("openai", "gpt-4o")
    assert encoding is not None
    assert encoding.name == "o200k_base"
    values = ["system", "Answer briefly.", "user", "What is the capital of Portugal?", "ana"]
    expected = 3 + 3 * 2 + 1 + sum(len(encoding.encode_ordinary(v)) for v in values)
    assert input_bound("openai", "gpt-4o", MESSAGES) == expected


def test_unknown_tokenizer_keeps_the_byte_bound() -> None:
    """An Ollama model, or an OpenAI-sdk model tiktoken does not know, is byte-bounded."""
    assert input_bound("ollama", "gpt-oss:120b", MESSAGES) == input_token_bound(MESSAGES)
    assert input_bound("openai", "my-finetune", MESSAGES) == input_token_bound(MESSAGES)


def test_tools_count_their_json_tokens_plus_an_overhead_each() -> None:
    """A tools list adds its JSON's tokens and EXTRA_OVERHEAD per tool."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}] * 2
    without = input_bound("openai", "gpt-4o", MESSAGES)
    with_tools = input_bound("openai", "gpt-4o", MESSAGES, [tools])
    assert with_tools - without > 2 * EXTRA_OVERHEAD


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_exact_bound_is_never_under_the_tokens_of_the_text(text: str) -> None:
    """For any text, the bound covers the content's o200k tokens plus the message framing."""
    encoding = tiktoken.get_encoding("o200k_base")
    messages = [{"role": "user", "content": text}]
    assert input_bound("openai", "gpt-4o", messages) >= len(encoding.encode_ordinary(text)) + 6
