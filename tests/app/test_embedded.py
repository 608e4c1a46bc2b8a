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
ready = client.get("/health/ready")
print(json.dumps({"note": note.status_code, "ready": ready.status_code, "body": ready.json,
                  "instance": app.instance_path}))
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
    assert outcome["ready"] == 200
    assert outcome["body"]["status"] == "warn"
    assert outcome["body"]["checks"]["sqlite:responseTime"][0]["status"] == "pass"
    assert outcome["body"]["checks"]["redis:responseTime"][0]["output"].startswith("not configured")
