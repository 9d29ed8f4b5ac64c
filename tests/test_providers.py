"""The SDK boundary: every any-llm exception is mapped onto our hierarchy, lazily imported."""

from __future__ import annotations

import inspect
import subprocess
import sys

import any_llm.exceptions as sdk_errors
import pytest

from aegis_proxy import errors
from aegis_proxy.providers import _CLASS_MAP, map_error


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
        (400, errors.ProviderRejectedError),
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
        "import aegis_proxy, aegis_proxy.cli, aegis_proxy.ledger, sys; "
        "print('any_llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
