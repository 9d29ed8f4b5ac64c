"""The package surface: a sorted __all__ whose every name resolves, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import aegis_proxy


def test_all_is_sorted_and_resolves() -> None:
    """__all__ is sorted and each name in it imports."""
    assert aegis_proxy.__all__ == sorted(aegis_proxy.__all__)
    for name in aegis_proxy.__all__:
        assert getattr(aegis_proxy, name) is not None


def test_contract_names_are_public() -> None:
    """The contract's entry points are importable from the package root."""
    from aegis_proxy import AegisLLMProxy, LLMTask, acompletion

    assert AegisLLMProxy.__name__ == "AegisLLMProxy"
    assert LLMTask().quality == "standard"
    assert callable(acompletion)


def test_import_is_lazy() -> None:
    """Importing the package alone loads neither the proxy nor pydantic models."""
    code = (
        "import aegis_proxy, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('aegis_proxy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['aegis_proxy']"
