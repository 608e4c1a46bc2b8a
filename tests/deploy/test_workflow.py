"""Static checks of the CI pipeline: .github/workflows/ci.yml, .github/dependabot.yml and
.trivyignore.yaml, read with PyYAML. Each test is a rule GitHub does not enforce and whose
breach costs a release: a deploy cancelled halfway, a gate that never runs, an unpinned
action, an exception that never expires. Nothing runs here; actionlint checks the syntax
(test_static.py), and tests/docker runs the image job under act."""

from __future__ import annotations

import datetime
import re

import pytest
import yaml

from harness import REPO

WORKFLOW_FILE = REPO / ".github" / "workflows" / "ci.yml"
RAW = WORKFLOW_FILE.read_text()
WORKFLOW = yaml.safe_load(RAW)
JOBS = WORKFLOW["jobs"]
# YAML 1.1 reads the key `on` as the boolean true
TRIGGERS = WORKFLOW.get("on", WORKFLOW.get(True))
CI_DOC = (REPO / "docs" / "ci.md").read_text()
# Build args and engine of act's local stand-ins: they come from `act --env`, never the workflow.
STAND_IN_SETTINGS = {"BASE_IMAGE", "WHEELHOUSE", "NGINX_IMAGE", "POSTGRES_IMAGE", "RELEASE_PULL", "DOCKER_HOST"}
SHA40 = re.compile(r"^[0-9a-f]{40}$")


def steps(job: str) -> list[dict]:
    return JOBS[job]["steps"]


def step(job: str, step_id: str) -> dict:
    return next(s for s in steps(job) if s.get("id") == step_id)


def index(job: str, step_id: str) -> int:
    return steps(job).index(step(job, step_id))


def all_steps() -> list[tuple[str, dict]]:
    return [(job, s) for job in JOBS for s in steps(job)]


def code(text: str) -> str:
    """Text without its comment lines, for checks that comments may explain."""
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def skipped_under_act(s: dict) -> bool:
    return "!env.ACT" in str(s.get("if", "")).replace(" ", "")


# --- triggers, concurrency, permissions ---------------------------------------------------

def test_no_job_level_if_reads_vars_or_secrets():
    """A job-level `if` is evaluated before the job enters its environment: an environment's
    variables read as empty there, so a deploy gated on them would be skipped for ever."""
    for name, job in JOBS.items():
        condition = str(job.get("if", ""))
        assert not re.search(r"\b(vars|secrets)\s*[.\[]", condition), f"{name}: {condition}"


def test_the_workflow_concurrency_never_cancels_a_push_run():
    """cancel-in-progress at the workflow level cancels a whole run, its deploy included."""
    concurrency = WORKFLOW["concurrency"]
    assert concurrency["cancel-in-progress"] in (False, "${{ github.event_name == 'pull_request' }}")
    assert "github.event_name" in concurrency["group"], "a manual dispatch must not replace or be replaced by a push"


def test_the_deploy_job_queues_and_is_never_cancelled():
    deploy = JOBS["deploy"]
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    assert deploy["environment"] == "production"
    for name, job in JOBS.items():
        assert job.get("concurrency", {}).get("cancel-in-progress", False) is False, name


def test_tags_and_dispatch_trigger_the_workflow():
    assert TRIGGERS["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert set(TRIGGERS["workflow_dispatch"]["inputs"]) == {"sha", "web_digest", "nginx_digest", "backup_digest"}


def test_permissions_are_minimal_per_job():
    assert WORKFLOW["permissions"] == {}
    for name, job in JOBS.items():
        expected = {"contents": "read", "packages": "write"} if name == "image" else {"contents": "read"}
        assert job["permissions"] == expected, name


# --- pinning ------------------------------------------------------------------------------

def test_every_action_is_pinned_by_commit_sha_with_its_version_in_a_comment():
    pinned = re.findall(r"^\s*(?:-\s+)?uses:\s*([^@\s]+)@(\S+)(.*)$", RAW, re.M)
    used = [s["uses"] for _, s in all_steps() if "uses" in s]
    assert len(pinned) == len(used) > 0, "every `uses:` is on one line of its own"
    for action, ref, rest in pinned:
        assert SHA40.match(ref), f"{action}@{ref}: pin the 40-hex commit, not a tag or branch"
        assert re.match(r"^\s+#\s+v\d+\.\d+\.\d+\s*$", rest), f"{action}: add the version as `# vX.Y.Z`"


def test_trivy_runs_by_digest_and_fails_on_fixable_high_and_critical():
    references = re.findall(r"aquasec/trivy\S*", RAW)
    assert references, "the release is scanned with Trivy"
    for reference in references:
        assert re.fullmatch(r"aquasec/trivy@sha256:[0-9a-f]{64}", reference), reference
    line = next(ln for ln in RAW.splitlines() if "aquasec/trivy@" in ln)
    assert re.search(r"#\s+\d+\.\d+\.\d+\s*$", line), "name the version the digest is"
    scan = next(s for _, s in all_steps() if "TRIVY_IMAGE" in s.get("env", {}))
    for flag in ("--exit-code 1", "--ignore-unfixed", "--severity HIGH,CRITICAL", "--ignorefile"):
        assert flag in scan["run"], flag
    assert ".trivyignore.yaml" in scan["run"]


# --- the scan's exceptions ----------------------------------------------------------------

IGNORE_SECTIONS = ("vulnerabilities", "misconfigurations", "secrets", "licenses")


def entries_without_expiry_or_reason(ignore: dict | None) -> list[str]:
    """Each entry of Trivy's YAML ignore file that lacks an expired_at date or a statement."""
    problems = []
    for section in IGNORE_SECTIONS:
        for entry in (ignore or {}).get(section) or []:
            if not isinstance(entry.get("expired_at"), datetime.date):
                problems.append(f"{section} {entry.get('id')}: no expired_at date")
            if not str(entry.get("statement") or "").strip():
                problems.append(f"{section} {entry.get('id')}: no statement")
    return problems


def test_every_scan_exception_expires_and_says_why():
    text = (REPO / ".trivyignore.yaml").read_text()
    ignore = yaml.safe_load(text)
    assert set(ignore or {}) <= set(IGNORE_SECTIONS)
    assert entries_without_expiry_or_reason(ignore) == []
    # the commented example is one a reader can uncomment as it is
    example = "\n".join(ln[2:] for ln in text.splitlines() if ln.startswith("#  ") or ln == "# vulnerabilities:")
    example = yaml.safe_load(example[example.index("vulnerabilities:"):])
    assert example["vulnerabilities"] and entries_without_expiry_or_reason(example) == []


def test_the_exception_check_catches_a_missing_expiry_or_reason():
    ignore = {"vulnerabilities": [{"id": "CVE-1", "statement": "why"}, {"id": "CVE-2", "expired_at": "soon"},
                                  {"id": "CVE-3", "expired_at": datetime.date(2030, 1, 1), "statement": " "}]}
    assert entries_without_expiry_or_reason(ignore) == [
        "vulnerabilities CVE-1: no expired_at date", "vulnerabilities CVE-2: no expired_at date",
        "vulnerabilities CVE-2: no statement", "vulnerabilities CVE-3: no statement"]


def test_dependabot_covers_pip_docker_and_the_actions():
    updates = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())["updates"]
    by_ecosystem = {u["package-ecosystem"]: u for u in updates}
    assert set(by_ecosystem) == {"pip", "docker", "github-actions"}
    assert set(by_ecosystem["docker"]["directories"]) == {"/", "/nginx", "/backup"}
    assert all(u["schedule"]["interval"] == "weekly" for u in updates)


# --- the image job ------------------------------------------------------------------------

def test_the_release_is_built_once_then_tested_and_scanned_then_pushed_without_a_rebuild():
    runs = [(i, s.get("run", "")) for i, s in enumerate(steps("image"))]
    builds = [i for i, run in runs if "scripts/build-release.sh" in run and "--push" not in run]
    pushes = [i for i, run in runs if "scripts/build-release.sh" in run and "--push" in run]
    assert len(builds) == len(pushes) == 1
    assert "--no-build" in steps("image")[pushes[0]]["run"]
    tested = [i for i, run in runs if "tests/docker" in run or "TRIVY_IMAGE" in str(steps("image")[i].get("env"))]
    assert len(tested) == 2 and builds[0] < min(tested) and max(tested) < pushes[0]
    assert steps("image")[pushes[0]]["if"] == "github.event_name == 'push'"
    outputs = JOBS["image"]["outputs"]
    assert set(outputs) == {"sha", "web", "nginx", "backup"}
    assert all("steps.push.outputs" in outputs[key] for key in ("web", "nginx", "backup"))


def test_the_container_tests_run_against_exactly_the_built_web_image():
    run = next(s["run"] for s in steps("image") if "tests/docker" in s.get("run", ""))
    assert 'KIT_DOCKER=host KIT_WEB_IMAGE="$REGISTRY/flask-kit-web:sha-$GITHUB_SHA"' in run


def test_stand_in_build_settings_reach_the_build_untouched():
    """Under act they come from --env; a value set in the workflow would override them."""
    scopes = [WORKFLOW.get("env", {})] + [job.get("env", {}) for job in JOBS.values()]
    scopes += [s.get("env", {}) for _, s in all_steps()]
    for scope in scopes:
        assert not STAND_IN_SETTINGS & set(scope), scope


# --- act ----------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["actions/setup-python", "actions/upload-artifact", "TRIVY_IMAGE", "docker login",
                                  "tests/docker", "make test", "syft"])
def test_steps_that_need_the_internet_or_would_recurse_are_skipped_under_act(what):
    matching = [s for _, s in all_steps() if what in str(s)]
    assert matching, what
    assert all(skipped_under_act(s) for s in matching), what


def test_every_step_skipped_under_act_is_listed_in_docs_ci_md():
    section = CI_DOC[CI_DOC.index("## Steps skipped under act"):]
    section = section[:section.index("\n## ", 1)]
    skipped = [(job, s) for job, s in all_steps() if skipped_under_act(s)]
    assert skipped
    for job, s in skipped:
        assert "name" in s, f"a step of {job} skipped under act has no name to list"
        assert f"`{s['name']}`" in section, f"{job}: `{s['name']}` is skipped under act but not in docs/ci.md"


def test_the_act_command_in_docs_stands_in_for_every_remote_action_but_checkout():
    """act fetches an action before it evaluates the step's `if:`: offline, each one needs a
    --local-repository stand-in, or the run fails before its first step."""
    remote = {s["uses"].split("@")[0] for _, s in all_steps() if "uses" in s} - {"actions/checkout"}
    assert remote
    for action in remote:
        assert f"--local-repository {action}@" in CI_DOC, action


# --- the deploy job -----------------------------------------------------------------------

def test_the_deploy_is_configured_or_not_in_its_first_step():
    first = steps("deploy")[1]
    assert first["id"] == "settings" and index("deploy", "settings") == 1, "right after the checkout"
    assert {name: value for name, value in first["env"].items()} == {
        "DEPLOY_HOST": "${{ vars.DEPLOY_HOST }}", "DEPLOY_USER": "${{ vars.DEPLOY_USER }}",
        "DEPLOY_URL": "${{ vars.DEPLOY_URL }}", "DEPLOY_SSH_KEY": "${{ secrets.DEPLOY_SSH_KEY }}",
        "DEPLOY_KNOWN_HOSTS": "${{ secrets.DEPLOY_KNOWN_HOSTS }}"}
    assert "::notice::" in first["run"] and "::error::" in first["run"] and "configured=" in first["run"]
    # nothing after it touches the server unless the settings are there
    for s in steps("deploy")[2:]:
        condition = str(s.get("if", ""))
        assert ("steps.settings.outputs.configured == 'true'" in condition or "steps.deploy.outcome" in condition
                or "ssh" not in s.get("run", "") and "deploy-over-ssh" not in s.get("run", "")), s["name"]


def test_the_deploy_step_deploys_the_images_by_digest_and_keeps_the_schema_lines():
    deploy = step("deploy", "deploy")
    assert deploy["if"] == "steps.settings.outputs.configured == 'true'"
    assert 'scripts/deploy-over-ssh.sh deploy "$SHA" "$WEB" "$NGINX" "$BACKUP"' in deploy["run"]
    assert "tee" in deploy["run"]
    assert "schema revision before: " in deploy["run"] and "schema revision after: " in deploy["run"]
    assert "~/.ssh" not in code(deploy["run"]), "a self-hosted runner's own ssh files are not ours to write"


def test_the_gate_asks_the_public_url_for_this_release_and_trusts_only_real_certificates():
    gate = step("deploy", "gate")
    assert gate["if"] == "steps.deploy.outcome == 'success'"
    assert index("deploy", "deploy") < index("deploy", "gate")
    for needed in ("/health/ready", "--fail-with-body", "--max-time", "releaseId", "streak -lt 5"):
        assert needed in gate["run"], needed
    assert not re.search(r"(^|\s)(-k|--insecure)\b", code(RAW), re.M), "CURL_CA_BUNDLE names a test CA; never -k"


def test_the_rollback_runs_only_after_a_successful_deploy_step_whose_gate_did_not_pass():
    """A failed deploy.sh has already rolled back on the server: another rollback would go one
    release too far."""
    rollbacks = [s for s in steps("deploy") if "deploy-over-ssh.sh rollback" in s.get("run", "")]
    assert rollbacks == [step("deploy", "rollback")]
    condition = step("deploy", "rollback")["if"]
    assert "steps.deploy.outcome == 'success'" in condition
    assert "steps.gate.outcome != 'success'" in condition
    assert "always()" in condition, "also when the gate was cut short"
    assert index("deploy", "gate") < index("deploy", "rollback")
    # the failed gate fails the job (tests/scripts/test_deploy_command.py runs it), so the
    # rollback step's own outcome says whether the rollback worked
    gate = step("deploy", "gate")
    assert "exit 1" in gate["run"] and not gate.get("continue-on-error"), "a rolled-back deploy fails the job"
    assert "exit 1" not in step("deploy", "rollback")["run"]


def test_the_summary_reports_the_release_schema_and_gate_whenever_the_deploy_is_configured():
    summary = next(s for s in steps("deploy") if s["name"] == "Summary")
    assert summary["if"] == "${{ always() && steps.settings.outputs.configured == 'true' }}"
    assert {"SHA", "WEB", "NGINX", "BACKUP", "BEFORE", "AFTER", "GATE"} <= set(summary["env"])
    assert "GITHUB_STEP_SUMMARY" in summary["run"]
