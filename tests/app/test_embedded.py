"""With no DATABASE_URL or REDIS_URL, development runs on SQLite and a local session store."""

import json
import os
import shutil
import subprocess
import sys

from harness import REPO


def test_embedded_default_serves_the_api_with_no_servers(tmp_path):
    """A fresh process on a copy of the code: no .env, no servers, and its own instance/."""
    for part in ("app", "migrations"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    script = """
import json
from flask_migrate import upgrade
from app import create_app
app = create_app({"APP_ENV": "development"})
with app.app_context():
    upgrade()
client = app.test_client()
client.post("/api/auth/register", json={"email": "ada@example.com", "password": "correct horse battery"})
client.post("/api/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"})
note = client.post("/api/notes", json={"title": "offline"})
listed = client.get("/api/notes")
read = client.get(f"/api/notes/{note.json['id']}")
ready = client.get("/health/ready")
print(json.dumps({"note": note.status_code, "read": read.json, "listed": listed.json, "ready": ready.status_code,
                  "body": ready.json, "instance": app.instance_path}))
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])

    assert outcome["instance"] == str(tmp_path / "instance")
    assert (tmp_path / "instance" / "app.sqlite").exists()
    assert outcome["note"] == 201
    # the page is read on SQLite's own cursor, whose datetimes are text until converted
    assert outcome["listed"]["items"] == [outcome["read"]]
    assert outcome["ready"] == 200
    assert outcome["body"]["status"] == "warn"
    assert outcome["body"]["checks"]["sqlite:responseTime"][0]["status"] == "pass"
    assert outcome["body"]["checks"]["redis:responseTime"][0]["output"].startswith("not configured")



LIMITS_SCRIPT = """
import json
from flask_migrate import upgrade
from app import create_app
app = create_app({"APP_ENV": "development", "LOGIN_FAILURES_PER_ACCOUNT": "2", "LOGIN_FAILURE_WINDOW_SECONDS": "60",
                  "NOTES_PER_USER_PER_MINUTE": "2"})
with app.app_context():
    upgrade()
clients = {name: app.test_client() for name in ("ada", "bob", "cy")}
def send(name, path, body, address):
    response = clients[name].post(path, json=body, environ_base={"REMOTE_ADDR": f"203.0.113.{address}"})
    return [response.status_code, response.headers.get("Retry-After"), response.json and response.json.get("error")]
def login(name, password, address=1):
    return send(name, "/api/auth/login", {"email": f"{name}@example.com", "password": password}, address)
for name in clients:
    send(name, "/api/auth/register", {"email": f"{name}@example.com", "password": "correct horse battery"}, 1)
right, wrong = "correct horse battery", "wrong password!"
print(json.dumps({
    "ada": [login("ada", wrong, 1), login("ada", wrong, 2), login("ada", right, 3)],
    "cy": [login("cy", password, 4) for password in (wrong, right, wrong, wrong)],
    "bob": [login("bob", right)] + [send("bob", "/api/notes", {"title": "t"}, address) for address in (1, 2, 3)],
    "cy_writes": [send("cy", "/api/notes", {"title": "t"}, 1)],
}))
"""


def test_embedded_limits_count_in_memory(tmp_path):
    """No Redis: failed logins and notes per user are counted in the process's memory, with the
    answers they get in Redis (tests/app/test_login_limits.py, tests/app/api/test_notes.py)."""
    for part in ("app", "migrations"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-c", LIMITS_SCRIPT], cwd=tmp_path,
                            env={**env, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    statuses = {name: [status for status, _, _ in sent] for name, sent in answers.items()}

    assert statuses["ada"] == [401, 401, 429], "the right password too, once the account is limited"
    assert statuses["cy"] == [401, 200, 401, 401], "a successful login clears its account's count"
    assert statuses["bob"] == [200, 201, 201, 429], "notes are limited per user, whatever the address"
    assert statuses["cy_writes"] == [201], "another user's are not"
    for _, retry_after, error in (answers["ada"][2], answers["bob"][3]):
        assert 0 < int(retry_after) <= 60 and error["code"] == "too_many_requests"
