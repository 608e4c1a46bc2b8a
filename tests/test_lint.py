"""Python lint over the whole repo (rules in pyproject.toml), so a dead import fails CI."""

import subprocess
import sys
from pathlib import Path

from harness import REPO


def test_python_passes_ruff():
    result = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
