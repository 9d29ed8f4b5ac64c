"""Prices from the bundled LiteLLM cost map, exact costs, and token bounds that never fall short."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import aegis_proxy
from aegis_proxy.reserve.pricing import (
    IMAGE_TOKEN_BOUND,
    Price,
    cost_micros,
    count_text_tokens,
    count_tokens,
    input_token_bound,
    lookup_price,
)

REPO = Path(aegis_proxy.__file__).resolve().parents[1]

OFFLINE_COUNT = """
import socket
def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from aegis_proxy.reserve.pricing import count_text_tokens, count_tokens
print(count_text_tokens("hello world"), count_tokens([{"role": "user", "content": "hello world"}]))
"""

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog. " * 20,
    "cjk": "契約当事者を抽出してください。甲は乙に対し、本契約に基づく義務を負う。" * 10,
    "emoji": "🙂🚀👩‍👩‍👧‍👦🇯🇵 ok ✅ " * 30,
    "code": "def f(x: int) -> int:\n    return {k: v ** 2 for k, v in zip(range(x), range(x))}\n"
    * 8,
    "json": json.dumps({"parties": [{"name": "Ünïcødé GmbH", "id": 12345}] * 10}),
    "whitespace": "a \n\t " * 200 + "    " * 100,
    "digits": "3141592653589793238462643383279502884197" * 25,
    "special": "<|endoftext|> <|fim_prefix|> \u200b\u00a0 \x00" * 10,
}


def _map_entry(key: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    assert spec is not None
    assert spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    cost_map = folder / "model_prices_and_context_window_backup.json"
    entry: dict[str, Any] = json.loads(cost_map.read_text(encoding="utf-8"))[key]
    return entry


def _run_offline(env_overrides: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env.update(env_overrides, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_COUNT], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_known_model_is_priced_exactly_from_the_map() -> None:
    """gpt-4o costs exactly tokens x the map's per-token prices, in micro-dollars."""
    entry = _map_entry("gpt-4o")
    price = lookup_price("openai", "gpt-4o")
    assert price == Price(
        input_per_mtok=Decimal(str(entry["input_cost_per_token"])) * 1_000_000,
        output_per_mtok=Decimal(str(entry["output_cost_per_token"])) * 1_000_000,
        cached_input_per_mtok=Decimal(str(entry["cache_read_input_token_cost"])) * 1_000_000,
    )
    assert price == Price(Decimal("2.5"), Decimal("10"), Decimal("1.25"))
    assert cost_micros(price, 1000, 500) == 7500


def test_cached_input_is_priced_at_the_cached_rate() -> None:
    """Cached tokens are part of the input and cost the cached rate."""
    price = Price(Decimal("2.5"), Decimal("10"), Decimal("1.25"))
    assert cost_micros(price, 1000, 0, cached_input_tokens=400) == 2000  # 600 x 2.5 + 400 x 1.25


def test_cached_input_without_cached_rate_costs_full_input() -> None:
    """Without a cached rate, cached tokens cost the input rate."""
    price = Price(Decimal(3), Decimal(15))
    assert cost_micros(price, 1000, 100, cached_input_tokens=400) == 4500  # 3000 + 1500


def test_cached_tokens_reported_apart_are_added() -> None:
    """More cached than input tokens (counted apart) are added, so cost is not understated."""
    price = Price(Decimal(3), Decimal(15), Decimal("0.3"))
    assert cost_micros(price, 100, 0, cached_input_tokens=1000) == 600  # 100 x 3 + 1000 x 0.3


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "expected"),
    [(1, 0, 1), (7, 0, 2), (0, 1, 1), (20, 0, 3), (0, 0, 0)],
)
def test_cost_rounds_up_to_whole_micros(
    input_tokens: int, output_tokens: int, expected: int
) -> None:
    """A fraction of a micro-dollar is charged as a whole one."""
    price = Price.per_mtok("0.15", "0.6")
    assert cost_micros(price, input_tokens, output_tokens) == expected


def test_negative_token_counts_are_rejected() -> None:
    """Negative token counts raise ValueError."""
    with pytest.raises(ValueError, match="negative"):
        cost_micros(Price.ZERO, -1, 0)


@pytest.mark.parametrize(
    ("sdk", "model"),
    [
        ("openai", "no-such-model-2031"),
        ("ollama", "gpt-oss:120b"),
        ("ollama", "gpt-4o"),
        ("ollama", "gpt-oss:120b-cloud"),
        ("ollama", "llama3"),
    ],
)
def test_unknown_or_foreign_or_zero_priced_model_has_no_price(sdk: str, model: str) -> None:
    """Unknown models, another vendor's models and $0 map entries give None, never $0."""
    assert lookup_price(sdk, model) is None


@pytest.mark.parametrize(
    ("sdk", "model", "expected"),
    [
        ("openai", "gpt-4o-mini", Price(Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))),
        ("mistral", "mistral-large-latest", Price(Decimal("0.5"), Decimal("1.5"), Decimal("0.05"))),
        (
            "together",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            Price(Decimal("1.04"), Decimal("1.04")),
        ),
        ("vertexai", "gemini-2.0-flash", Price(Decimal("0.15"), Decimal("0.6"))),
    ],
)
def test_prefixed_and_aliased_keys_are_found(sdk: str, model: str, expected: Price) -> None:
    """'sdk/model' keys and any-llm ids spelled differently in LiteLLM are priced."""
    assert lookup_price(sdk, model) == expected


def test_price_from_config_numbers_is_exact() -> None:
    """Floats from YAML become the Decimals they read as."""
    assert Price.per_mtok(0.1, 0.4) == Price(Decimal("0.1"), Decimal("0.4"))
    assert Price.per_mtok(0, 0).is_free
    assert Price.ZERO.is_free
    assert not Price.per_mtok(0, "0.01").is_free


def test_negative_price_is_rejected() -> None:
    """A negative price raises ValueError."""
    with pytest.raises(ValueError, match="negative"):
        Price(Decimal(-1), Decimal(0))


def test_token_counting_works_offline() -> None:
    """cl100k_base loads from LiteLLM's bundled file with every network call refused."""
    assert _run_offline({}) == "2 9"


def test_token_counting_works_offline_with_a_foreign_cache_dir(tmp_path: Path) -> None:
    """A TIKTOKEN_CACHE_DIR without the encoding does not make tiktoken download it."""
    assert _run_offline({"TIKTOKEN_CACHE_DIR": str(tmp_path)}) == "2 9"
    assert list(tmp_path.iterdir()) == []


def test_token_counts_are_positive() -> None:
    """Counting a message or a text gives the tiktoken count, at least one token."""
    assert count_text_tokens("hello world") == 2
    assert count_tokens([{"role": "user", "content": "hello world"}]) == 9


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_input_bound_is_never_below_the_tiktoken_count(name: str) -> None:
    """The byte bound is >= the cl100k count for English, CJK, emoji, code, JSON and more."""
    text = SAMPLES[name]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": text},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]
    assert len(text.encode()) >= count_text_tokens(text)
    assert input_token_bound(messages) >= count_tokens(messages)


def test_input_bound_counts_tool_call_arguments_and_tools() -> None:
    """Tool-call arguments, tool results and the tools JSON all enter the bound."""
    arguments = json.dumps({"query": "ß" * 500})
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [{"function": {"arguments": arguments}}]},
        {"role": "tool", "content": "x" * 300},
    ]
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    without = input_token_bound(messages)
    assert without >= len(arguments.encode()) + 300
    tools_bytes = len(json.dumps(tools, ensure_ascii=False).encode())
    assert input_token_bound(messages, tools) == without + tools_bytes


def test_images_add_a_constant_not_their_base64_length() -> None:
    """An image part adds ``image_token_bound`` tokens whatever its data URL length."""
    url = "data:image/png;base64," + "A" * 100_000
    part = {"type": "image_url", "image_url": {"url": url}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": [part]}]
    overhead = 64 + 16 + len("role") + len("user") + len("content")
    assert input_token_bound(messages) == overhead + IMAGE_TOKEN_BOUND
    assert input_token_bound(messages, image_token_bound=500) == overhead + 500
