"""README's Python snippets run as written: every name defined, and the script works."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Rig

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_readme_snippet_defines_every_name(block: int) -> None:
    """No README snippet uses an undefined name or awaits outside an async function."""
    done = subprocess.run(
        [RUFF, "check", "--no-cache", "--isolated", "--select", "F821,F704,PLE1142",
         "--stdin-filename", "snippet.py", "-"],
        input=BLOCKS[block], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_readme_script_runs_against_a_provider(rig: Rig) -> None:
    """The README's whole script, with its config path pointed at the fake servers, prints
    the answer and the provider that served it."""
    [script] = [block for block in BLOCKS if "asyncio.run(main())" in block]
    rig.local.reply_text = "returns are free within 30 days"
    code = script.replace('"config/aegis.yaml"', repr(str(rig.write_config())))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[0] == "returns are free within 30 days local_ollama"
    assert done.stderr == ""
