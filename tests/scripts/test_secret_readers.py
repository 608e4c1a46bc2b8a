"""NAME or NAME_FILE is read alike by the app (app/config.py), the web entrypoint and the
backup scripts (bash): the same value, or an error, for the same environment."""

from __future__ import annotations

import re
import subprocess

import pytest

from app.config import ConfigError, _Reader
from harness import REPO

# (script, the function that reads a secret, how a caller gets the value)
BASH_READERS = {
    "entrypoint": (REPO / "scripts" / "docker-entrypoint.sh", "setting", 'setting DATABASE_URL'),
    "backup": (REPO / "scripts" / "backup.sh", "read_secret", 'read_secret DATABASE_URL; printf "%s\\n" "$REPLY"'),
}
URL = "postgresql://flask:s3cret@db:5432/flask"


def function_text(script, name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", script.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{script} has no function {name}"
    return match.group(0)


def bash_outcome(reader: str, env: dict[str, str]) -> tuple[str, str]:
    script, name, call = BASH_READERS[reader]
    program = f'die() {{ echo "$1" >&2; exit 1; }}\n{function_text(script, name)}\n{call}\n'
    result = subprocess.run(["bash", "-c", program], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                            text=True, timeout=10)
    return ("value", result.stdout.rstrip("\n")) if result.returncode == 0 else ("error", result.stderr)


def python_outcome(env: dict[str, str]) -> tuple[str, str]:
    try:
        return "value", _Reader(env).secret("DATABASE_URL") or ""
    except ConfigError as error:
        return "error", str(error)


def cases(tmp_path) -> dict[str, dict[str, str]]:
    files = {"plain": f"{URL}\n", "padded": f"  \n{URL}  \n\n", "empty": "", "blank": " \n\t\n"}
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    return {
        "variable": {"DATABASE_URL": URL},
        "neither": {},
        "empty variable": {"DATABASE_URL": ""},
        "file": {"DATABASE_URL_FILE": str(paths["plain"])},
        "file with blank lines and spaces": {"DATABASE_URL_FILE": str(paths["padded"])},
        "empty variable beside a file": {"DATABASE_URL": "", "DATABASE_URL_FILE": str(paths["plain"])},
        "both": {"DATABASE_URL": URL, "DATABASE_URL_FILE": str(paths["plain"])},
        "empty file": {"DATABASE_URL_FILE": str(paths["empty"])},
        "blank file": {"DATABASE_URL_FILE": str(paths["blank"])},
        "missing file": {"DATABASE_URL_FILE": str(tmp_path / "absent")},
    }


@pytest.mark.parametrize("reader", sorted(BASH_READERS))
def test_bash_and_python_read_secrets_alike(tmp_path, reader):
    outcomes = {case: (python_outcome(env), bash_outcome(reader, env)) for case, env in cases(tmp_path).items()}

    for case, (python, bash) in outcomes.items():
        assert python[0] == bash[0], f"{case}: Python {python}, {reader} {bash}"
        if python[0] == "value":
            assert python[1] == bash[1], case
    # and the table exercises both outcomes
    assert {python[0] for python, _ in outcomes.values()} == {"value", "error"}
