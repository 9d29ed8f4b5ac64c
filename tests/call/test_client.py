"""The SDK boundary: every any-llm exception is mapped onto our hierarchy, lazily imported.

Also how a provider's calls spread over its SDK clients (real HTTP to the fake servers).
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys

import any_llm.exceptions as sdk_errors
import pytest

from aegis_proxy import errors
from aegis_proxy.call.client import SHARD_IN_FLIGHT, ProviderClient, _plain_openai_client
from aegis_proxy.call.egress import Expected, expecting
from aegis_proxy.call.sdk_errors import _CLASS_MAP, map_error
from aegis_proxy.config import load_config
from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig
from tests.fakeserver import Fault


def _sdk_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(sdk_errors, inspect.isclass)
        if issubclass(cls, sdk_errors.AnyLLMError) and not cls.__name__.startswith("_")
    ]


def test_every_sdk_exception_is_mapped() -> None:
    """Each public any_llm exception class has an entry in the mapping table."""
    missing = [cls.__name__ for cls in _sdk_classes() if cls.__name__ not in _CLASS_MAP]
    assert missing == []


@pytest.mark.parametrize("cls", _sdk_classes(), ids=lambda c: c.__name__)
def test_each_sdk_exception_becomes_a_provider_call_error(cls: type[BaseException]) -> None:
    """Mapping any any_llm exception yields the ProviderCallError subclass of the table."""
    exc = cls.__new__(cls)
    exc.args = ("upstream said: secret prompt text",)
    mapped = map_error("p", exc)
    assert type(mapped) is _CLASS_MAP[cls.__name__]
    assert mapped.provider == "p"
    assert "secret prompt text" not in str(mapped)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, errors.RateLimitedError),
        (500, errors.ProviderServerError),
        (503, errors.ProviderServerError),
        (401, errors.ProviderAuthError),
        (403, errors.ProviderAuthError),
        (404, errors.ModelNotFoundError),
        (400, errors.RequestRejectedError),
        (413, errors.RequestRejectedError),
        (422, errors.RequestRejectedError),
    ],
)
def test_status_codes_decide_the_class(
    status: int, expected: type[errors.ProviderCallError]
) -> None:
    """An HTTP status on a generic SDK error picks the matching class."""
    exc = sdk_errors.InvalidRequestError("x", status_code=status)
    mapped = map_error("p", exc)
    assert type(mapped) is expected
    assert mapped.status_code == status


def test_rate_limit_keeps_retry_after() -> None:
    """Retry-After in seconds survives the mapping as a float."""
    mapped = map_error("p", sdk_errors.RateLimitError("slow down", retry_after="2.5"))
    assert isinstance(mapped, errors.RateLimitedError)
    assert mapped.retry_after == 2.5
    assert mapped.retryable


def test_timeouts_and_connections() -> None:
    """Builtin timeouts and connection errors map to retryable classes."""
    assert type(map_error("p", TimeoutError())) is errors.ProviderTimeoutError
    assert type(map_error("p", ConnectionResetError())) is errors.ProviderConnectionError


def test_report_path_does_not_import_any_llm() -> None:
    """Importing the package, the CLI and the ledger does not import any_llm."""
    code = (
        "import aegis_proxy, aegis_proxy.cli.main, aegis_proxy.settle.sqlite.ledger, sys; "
        "print('any_llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prepare_imports_the_sdk_chat_modules_off_the_event_loop() -> None:
    """prepare (run by warm_up in a thread) loads what the OpenAI SDK imports on first use."""
    code = (
        "import sys; from aegis_proxy.config import ProviderConfig; "
        "from aegis_proxy.call.client import ProviderClient; "
        "config = ProviderConfig(sdk='openai', model='gpt-4o', api_base='http://127.0.0.1:9/v1'); "
        "ProviderClient('openai', config).prepare(); "
        "print('openai.resources.chat.completions.completions' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


async def _concurrent_calls(client: ProviderClient, model: str, count: int) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    wire = "ollama" if client.config.sdk == "ollama" else "openai"
    expected = Expected(client.name, wire, model, messages, {}, lambda _: {}, False, False)
    with expecting(expected):  # what the attempt loop does: the egress guard checks the body
        await asyncio.gather(*(client.complete(model, messages, {}) for _ in range(count)))


@pytest.mark.parametrize(
    ("provider", "authorization"),
    [
        ("openai", f"Bearer {OPENAI_KEY}"),
        ("ollama_cloud", f"Bearer {CHEAP_KEY}"),
        ("local_ollama", None),
    ],
)
async def test_calls_spill_over_to_more_clients_only_under_load(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, provider: str, authorization: str | None
) -> None:
    """Sequential calls share one client; 40 at once use three, each with the right key."""
    monkeypatch.setenv("OLLAMA_API_KEY", "env-key-that-must-not-leak")
    config = load_config(rig.write_config()).providers[provider]
    server = rig.servers()[provider]
    client = ProviderClient(provider, config)
    try:
        for _ in range(3):
            await _concurrent_calls(client, config.model, 1)
        assert client.shards == 1
        server.add_fault(Fault.delay(0.3), times=SHARD_IN_FLIGHT * 3)
        await _concurrent_calls(client, config.model, SHARD_IN_FLIGHT * 2 + 8)
        assert client.shards == 3
    finally:
        await client.aclose()
    chats = server.chat_requests()
    assert len(chats) == 3 + SHARD_IN_FLIGHT * 2 + 8
    assert {chat.headers.get("authorization") for chat in chats} == {authorization}


def test_only_plain_openai_style_sdks_get_more_clients() -> None:
    """SDKs building their own kind of HTTP client (Azure here) keep a single client."""
    from any_llm import AnyLLM

    assert _plain_openai_client(AnyLLM.get_provider_class("openai"))
    assert not _plain_openai_client(AnyLLM.get_provider_class("azureopenai"))
