"""scripts/build-release.sh with a stub docker that records every call: the three images get the
commit's tag and each --tag, the OCI labels, and only the build args that are set; a push prints
the registry's digests; bad input is refused before docker is called. The script runs from a
throwaway git repository, so the commit, its time and its origin are the test's own. Real builds
and pushes are tested on the private Docker engine (tests/docker)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO

REGISTRY = "registry.example.com:5000/acme"
IMAGES = {"web": "flask-kit-web", "nginx": "flask-kit-nginx", "backup": "flask-kit-backup"}
COMMITTED = "2026-03-04T05:06:07+00:00"
STAND_INS = ("BASE_IMAGE", "WHEELHOUSE", "NGINX_IMAGE", "POSTGRES_IMAGE", "RELEASE_PULL", "SOURCE_URL")

# Records argv as a JSON line. `image inspect --format` answers with the repo digests a push
# leaves (one under a mirror too, which the script must not pick); STUB_MISSING names
# references that do not exist.
STUB = f"""#!{sys.executable}
import hashlib, json, os, sys
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(args) + "\\n")
if args[:2] == ["image", "inspect"]:
    ref = args[-1]
    if ref in os.environ.get("STUB_MISSING", "").split():
        sys.exit(1)
    if "--format" in args:
        repo = ref.rsplit(":", 1)[0]
        name = repo.rsplit("/", 1)[1]
        print("mirror.example.com/" + name + "@sha256:" + "0" * 64)
        print(repo + "@sha256:" + hashlib.sha256(name.encode()).hexdigest())
"""


def digest(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


@pytest.fixture
def checkout(tmp_path) -> tuple[Path, str]:
    """A git repository holding the script, one commit at a fixed time, and an origin whose URL
    carries a token, as CI's checkout leaves it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "build-release.sh", repo / "scripts")
    env = {**os.environ, "GIT_AUTHOR_DATE": COMMITTED, "GIT_COMMITTER_DATE": COMMITTED,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "--quiet"], ["add", "."], ["commit", "--quiet", "-m", "release"],
                 ["remote", "add", "origin", "https://x-access-token:s3cret@github.com/acme/flask-kit.git"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    (tmp_path / "docker").write_text(STUB)
    (tmp_path / "docker").chmod(0o755)
    return repo, sha


def run(checkout: tuple[Path, str], *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """The script with the stub docker, REGISTRY set, and none of the developer's build settings."""
    repo, _ = checkout
    calls = repo.parent / "calls.log"
    calls.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in STAND_INS and k != "REGISTRY"}
    full = {**base, "REGISTRY": REGISTRY, "DOCKER": str(repo.parent / "docker"), "CALLS": str(calls), **env}
    full = {k: v for k, v in full.items() if v is not None}
    result = subprocess.run([str(repo / "scripts" / "build-release.sh"), *args], cwd=repo.parent, env=full,
                            capture_output=True, text=True, timeout=30)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return result, recorded


def builds(calls: list[list[str]]) -> dict[str, list[str]]:
    """Each build's argv, by the image of its first tag."""
    found = {}
    for call in calls:
        if call[0] == "build":
            first_tag = call[call.index("--tag") + 1]
            found[first_tag.rsplit("/", 1)[1].split(":")[0]] = call
    return found


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_builds_each_image_once_with_the_commits_tag_and_every_extra_tag(checkout):
    _, sha = checkout
    result, calls = run(checkout, sha, "--tag", "latest", "--tag", "v1.2.3")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "without --push nothing goes to stdout"
    built = builds(calls)
    assert list(built) == list(IMAGES.values())
    assert not [call for call in calls if call[0] == "push"]
    for name, argv in built.items():
        assert values(argv, "--tag") == [f"{REGISTRY}/{name}:{tag}" for tag in (f"sha-{sha}", "latest", "v1.2.3")]
        assert argv[-1] == ".", "the repository root is the context"
        assert "--pull" in argv
    assert [values(argv, "--file") for argv in built.values()] == [["Dockerfile"], ["nginx/Dockerfile"],
                                                                  ["backup/Dockerfile"]]


def test_labels_name_the_commit_its_time_and_the_source_without_credentials(checkout):
    _, sha = checkout
    result, calls = run(checkout, sha)

    assert result.returncode == 0, result.stderr
    for argv in builds(calls).values():
        assert values(argv, "--label") == [
            f"org.opencontainers.image.revision={sha}",
            f"org.opencontainers.image.created={COMMITTED}",
            "org.opencontainers.image.source=https://github.com/acme/flask-kit",
        ]
    assert "s3cret" not in json.dumps(calls)


def test_source_url_overrides_origin(checkout):
    _, sha = checkout
    _, calls = run(checkout, sha, SOURCE_URL="https://git.example.com/ops/kit")
    for argv in builds(calls).values():
        assert "org.opencontainers.image.source=https://git.example.com/ops/kit" in values(argv, "--label")


@pytest.mark.parametrize("env, expected", [
    ({}, {"flask-kit-web": [], "flask-kit-nginx": [], "flask-kit-backup": []}),
    ({"BASE_IMAGE": "py:local", "NGINX_IMAGE": "nginx:local"},
     {"flask-kit-web": ["BASE_IMAGE=py:local"], "flask-kit-nginx": ["NGINX_IMAGE=nginx:local"],
      "flask-kit-backup": []}),
    ({"BASE_IMAGE": "py:local", "WHEELHOUSE": "build/wheels", "NGINX_IMAGE": "nginx:local",
      "POSTGRES_IMAGE": "pg:local"},
     {"flask-kit-web": ["BASE_IMAGE=py:local", "WHEELHOUSE=build/wheels"],
      "flask-kit-nginx": ["NGINX_IMAGE=nginx:local"], "flask-kit-backup": ["POSTGRES_IMAGE=pg:local"]}),
    ({"BASE_IMAGE": ""}, {"flask-kit-web": [], "flask-kit-nginx": [], "flask-kit-backup": []}),
], ids=["none", "some", "all", "empty-is-unset"])
def test_build_args_are_passed_only_when_set_and_only_to_their_image(checkout, env, expected):
    _, sha = checkout
    result, calls = run(checkout, sha, **env)

    assert result.returncode == 0, result.stderr
    assert {name: values(argv, "--build-arg") for name, argv in builds(calls).items()} == \
        {name: [f"GIT_SHA={sha}", *args] for name, args in expected.items()}


def test_uncommitted_changes_are_built_with_a_warning(checkout):
    repo, sha = checkout
    script = repo / "scripts" / "build-release.sh"
    script.write_text(script.read_text() + "\n")
    result, calls = run(checkout, sha)
    assert result.returncode == 0, result.stderr
    assert "warning: the work tree has uncommitted changes" in result.stderr
    assert len(builds(calls)) == 3


def test_release_pull_0_builds_without_pull(checkout):
    _, sha = checkout
    result, calls = run(checkout, sha, RELEASE_PULL="0")
    assert result.returncode == 0, result.stderr
    assert not [argv for argv in builds(calls).values() if "--pull" in argv]


def test_push_pushes_every_tag_and_prints_the_registrys_digests(checkout, tmp_path):
    _, sha = checkout
    digests = tmp_path / "release.digests"
    result, calls = run(checkout, sha, "--push", "--tag", "latest", "--digests", str(digests))

    assert result.returncode == 0, result.stderr
    pushed = [call[1] for call in calls if call[0] == "push"]
    assert pushed == [f"{REGISTRY}/{name}:{tag}" for name in IMAGES.values() for tag in (f"sha-{sha}", "latest")]
    first_push = next(i for i, call in enumerate(calls) if call[0] == "push")
    assert all(call[0] != "build" for call in calls[first_push:]), "built before anything is pushed"
    expected = "".join(f"{key}={digest(name)}\n" for key, name in IMAGES.items())
    assert result.stdout == expected
    assert digests.read_text() == expected


def test_no_build_pushes_what_was_built_without_building_again(checkout):
    _, sha = checkout
    result, calls = run(checkout, sha, "--push", "--no-build")

    assert result.returncode == 0, result.stderr
    assert not builds(calls)
    assert len([call for call in calls if call[0] == "push"]) == 3
    assert result.stdout.splitlines() == [f"{key}={digest(name)}" for key, name in IMAGES.items()]


def test_a_missing_image_stops_the_push_before_anything_is_pushed(checkout):
    _, sha = checkout
    missing = f"{REGISTRY}/flask-kit-backup:latest"
    result, calls = run(checkout, sha, "--push", "--no-build", "--tag", "latest", STUB_MISSING=missing)

    assert result.returncode == 1
    assert f"{missing} does not exist here" in result.stderr and "fix:" in result.stderr
    assert not [call for call in calls if call[0] == "push"]


@pytest.mark.parametrize("args, message", [
    (["0123456"], "is not a full commit SHA"),
    (["0123456789ABCDEF0123456789ABCDEF01234567"], "is not a full commit SHA"),
    (["0123456789abcdef0123456789abcdef0123456g"], "is not a full commit SHA"),
    (["--push"], "is not a full commit SHA"),
    (["{sha}", "--tag", "sha-other"], "is not a tag this script may set"),
    (["{sha}", "--tag", "bad tag"], "is not a tag this script may set"),
    (["{sha}", "--tag"], "--tag needs a value"),
    (["{sha}", "--digests", "out"], "--digests without --push"),
    (["{sha}", "--no-build"], "--no-build without --push"),
    (["{sha}", "--force"], "unknown option --force"),
    (["0123456789abcdef0123456789abcdef01234567"], "the work tree is at"),
], ids=["short", "uppercase", "not-hex", "no-sha", "sha-tag", "bad-tag", "tag-no-value", "digests-no-push",
        "no-build-no-push", "unknown-option", "not-head"])
def test_bad_arguments_are_refused_before_docker_runs(checkout, args, message):
    _, sha = checkout
    result, calls = run(checkout, *[arg.format(sha=sha) for arg in args])

    assert result.returncode == 1
    assert message in result.stderr and "fix:" in result.stderr, result.stderr
    assert calls == []


def test_missing_registry_is_refused_with_the_fix(checkout):
    _, sha = checkout
    result, calls = run(checkout, sha, REGISTRY=None)

    assert result.returncode == 1
    assert "REGISTRY is not set; fix: export REGISTRY=" in result.stderr
    assert calls == []


def test_no_arguments_prints_the_usage():
    result = subprocess.run([str(REPO / "scripts" / "build-release.sh")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("Build (and push) the release of one commit")
    assert "Usage: scripts/build-release.sh <sha>" in result.stderr
