"""Prices and token counts: how much an attempt may cost before it runs, and did cost after.

The budget guarantee rests on two numbers computed here, so both err on the expensive side:

- ``input_token_bound`` is an upper bound of the prompt tokens (UTF-8 bytes: a byte-level
  BPE token is at least one byte), never an estimate that could fall short.
- ``cost_micros`` rounds up to whole micro-dollars, so a cost is never understated.

Prices come from LiteLLM's bundled cost map, read as a JSON file; ``litellm`` itself is never
imported (its import is slow and may reach the network). An unknown model has no price
(``None``), never a silent $0. Token counting uses tiktoken's ``cl100k_base`` from the file
LiteLLM bundles, offline. Money is integer micro-dollars: 1 USD per million tokens is
exactly 1 micro-dollar per token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, ClassVar

IMAGE_TOKEN_BOUND = 2000
"""Tokens assumed for one image part: providers bill images by size, never by base64 length."""

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_PER_MESSAGE_BOUND = 16
_REQUEST_BOUND = 64
_COST_MAP = "model_prices_and_context_window_backup.json"
# tiktoken names cached files by the sha1 of their download URL; this is cl100k_base's.
_CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (  # copied from tiktoken_ext.openai_public.cl100k_base
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
# any-llm provider ids whose LiteLLM ``litellm_provider`` is spelled differently.
_PROVIDER_ALIASES: dict[str, tuple[str, ...]] = {
    "together": ("together_ai",),
    "fireworks": ("fireworks_ai",),
    "azureopenai": ("azure",),
    "vertexai": ("vertex_ai", "vertex_ai-language-models", "vertex_ai-anthropic_models"),
    "bedrock": ("bedrock", "bedrock_converse"),
    "cohere": ("cohere_chat", "cohere"),
}


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; ``cached_input_per_mtok`` None means cached input costs full."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None

    ZERO: ClassVar[Price]

    def __post_init__(self) -> None:
        rates = (self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)
        if any(rate is not None and rate < 0 for rate in rates):
            raise ValueError(f"prices must not be negative: {self}")

    @classmethod
    def per_mtok(
        cls,
        input_per_mtok: object,
        output_per_mtok: object,
        cached_input_per_mtok: object | None = None,
    ) -> Price:
        """Build a price from config numbers (int, float, str, Decimal) without float error."""
        cached = None if cached_input_per_mtok is None else _decimal(cached_input_per_mtok)
        return cls(_decimal(input_per_mtok), _decimal(output_per_mtok), cached)

    @property
    def is_free(self) -> bool:
        """True for a $0 provider (local hardware): it needs no budget reservation."""
        cached = self.cached_input_per_mtok or Decimal(0)
        return self.input_per_mtok == 0 and self.output_per_mtok == 0 and cached == 0


Price.ZERO = Price(Decimal(0), Decimal(0))


def lookup_price(sdk: str, model: str) -> Price | None:
    """The cost-map price of ``model`` served by ``sdk`` (an any-llm provider id), or None.

    A bare ``model`` key is used only when its ``litellm_provider`` matches ``sdk``, so a
    model is never priced at another vendor's rate. A $0 entry counts as unknown: the map
    lists local models (and even ``ollama/gpt-oss:120b-cloud``) at $0, which says nothing
    about what a paid endpoint charges.
    """
    providers = _PROVIDER_ALIASES.get(sdk, (sdk,))
    cost_map = _cost_map()
    entry = cost_map.get(model)
    if entry is not None and entry.get("litellm_provider") in providers:
        return _price_of(entry)
    entry = cost_map.get(f"{sdk}/{model}")
    if entry is not None:
        return _price_of(entry)
    by_provider = _by_provider()
    for provider in providers:
        entry = by_provider.get((provider, model))
        if entry is not None:
            return _price_of(entry)
    return None


def cost_micros(
    price: Price, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
) -> int:
    """Cost in micro-dollars, rounded up; cached tokens are part of ``input_tokens``.

    Reasoning tokens are part of ``output_tokens`` (OpenAI usage) and cost the output rate.

    If a provider reports more cached tokens than input tokens, it counted them apart
    (Anthropic style); they are then added, so the cost is still never understated.
    """
    if min(input_tokens, output_tokens, cached_input_tokens) < 0:
        raise ValueError("token counts must not be negative")
    cached_rate = price.cached_input_per_mtok
    if cached_rate is None:
        cached_rate = price.input_per_mtok
    uncached = input_tokens
    if cached_input_tokens <= input_tokens:
        uncached -= cached_input_tokens
    exact = (
        uncached * price.input_per_mtok
        + cached_input_tokens * cached_rate
        + output_tokens * price.output_per_mtok
    )
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def input_token_bound(
    messages: Sequence[Mapping[str, Any]],
    tools: object = None,
    *,
    image_token_bound: int = IMAGE_TOKEN_BOUND,
) -> int:
    """An upper bound of the prompt tokens: never below the real count of a byte-level BPE.

    ``tools`` is every other billed input besides the messages (tools, schemas, every
    chat parameter): counted at its JSON size.
    """
    total = _REQUEST_BOUND + _PER_MESSAGE_BOUND * len(messages)
    total += sum(_byte_bound(message, image_token_bound) for message in messages)
    if tools:
        total += len(json.dumps(tools, ensure_ascii=False, default=str).encode())
    return total


def count_text_tokens(text: str) -> int:
    """Tokens of ``text`` in ``cl100k_base`` (special tokens counted as plain text)."""
    return len(_encoding().encode_ordinary(text))


def count_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    image_token_bound: int = IMAGE_TOKEN_BOUND,
) -> int:
    """Prompt tokens of chat ``messages`` the way OpenAI counts them (3 per message + 3),
    plus the tool definitions sent with them (their JSON's tokens: providers count those)."""
    encoding = _encoding()
    total = 3 + 3 * len(messages)
    if tools:
        total += len(encoding.encode_ordinary(json.dumps(tools, ensure_ascii=False, default=str)))
    for message in messages:
        for item in _texts(message):
            if isinstance(item, str):
                total += len(encoding.encode_ordinary(item))
            else:
                total += image_token_bound
    return total


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"not a price: {value!r}")
    return Decimal(str(value))


def _per_mtok(per_token: object) -> Decimal:
    rate = (_decimal(per_token) * 1_000_000).normalize()
    return rate.quantize(Decimal(1)) if rate == rate.to_integral_value() else rate


def _price_of(entry: Mapping[str, Any]) -> Price | None:
    input_cost = entry.get("input_cost_per_token")
    output_cost = entry.get("output_cost_per_token")
    if input_cost is None or output_cost is None:
        return None
    cached = entry.get("cache_read_input_token_cost")
    cached_rate = None if cached is None else _per_mtok(cached)
    price = Price(_per_mtok(input_cost), _per_mtok(output_cost), cached_rate)
    return None if price.is_free else price


def _byte_bound(value: object, image_tokens: int) -> int:
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode())
    if isinstance(value, Mapping):
        if value.get("type") in _IMAGE_PART_TYPES:
            return image_tokens
        return sum(_byte_bound(k, 0) + _byte_bound(v, image_tokens) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_byte_bound(item, image_tokens) for item in value)
    if value is None:
        return 0
    dump = getattr(value, "model_dump", None)  # pydantic message objects
    if callable(dump):
        return _byte_bound(dump(), image_tokens)
    return len(str(value).encode())


def _texts(value: object) -> Iterator[str | None]:
    """Every text of a message; None stands for an image part."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        if value.get("type") in _IMAGE_PART_TYPES:
            yield None
            return
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def _litellm_dir() -> Path:
    spec = importlib.util.find_spec("litellm")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed: its bundled cost map is needed")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _cost_map() -> dict[str, dict[str, Any]]:
    with (_litellm_dir() / _COST_MAP).open(encoding="utf-8") as file:
        data: dict[str, dict[str, Any]] = json.load(file)
    data.pop("sample_spec", None)
    return data


@functools.cache
def _by_provider() -> dict[tuple[str, str], dict[str, Any]]:
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for key, entry in _cost_map().items():
        provider = entry.get("litellm_provider")
        if isinstance(provider, str):
            index.setdefault((provider, key.removeprefix(f"{provider}/")), entry)
    return index


@functools.cache
def _encoding() -> Any:
    import tiktoken  # lazy: only responses without usage need it

    bundled = _litellm_dir() / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    if (Path(os.environ["TIKTOKEN_CACHE_DIR"]) / _CL100K_FILE).is_file():
        return tiktoken.get_encoding("cl100k_base")
    # The variable points elsewhere: tiktoken would download; build from the bundled file.
    data = (bundled / _CL100K_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        raise RuntimeError(f"{bundled / _CL100K_FILE} is not the cl100k_base encoding")
    ranks = dict(_read_ranks(data.splitlines()))
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )


def bundled_encoding(name: str) -> Any | None:
    """tiktoken's encoding ``name`` from the files LiteLLM bundles (offline), or None.

    ``cl100k_base`` is always there; another encoding only if its file is in the directory
    tiktoken reads (``TIKTOKEN_CACHE_DIR``, by default LiteLLM's bundled one): tiktoken
    would otherwise download it, which this never lets happen.
    """
    if name == "cl100k_base":
        return _encoding()
    _encoding()  # sets TIKTOKEN_CACHE_DIR to the bundled files unless the caller chose one
    file = _BUNDLED_FILES.get(name)
    if file is None or not (Path(os.environ["TIKTOKEN_CACHE_DIR"]) / file).is_file():
        return None
    import tiktoken

    return tiktoken.get_encoding(name)


_BUNDLED_FILES = {  # sha1 of each encoding's download URL: tiktoken's cache file names
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
    "p50k_base": "ec7223a39ce59f226a68acc30dc1af2788490e15",
}


def _read_ranks(lines: Iterable[bytes]) -> Iterator[tuple[bytes, int]]:
    for line in lines:
        if line:
            token, rank = line.split()
            yield base64.b64decode(token), int(rank)
