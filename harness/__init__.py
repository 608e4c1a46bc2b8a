"""The one harness for real servers on loopback: processes, waits on observable state, HTTPS
to 127.0.0.1 under the site's name, fault injection and counted load.

Shared by the test suite (tests/), the resilience drills (drills/, `make drill`) and the
benchmarks (bench/, `make bench`). It may import the app; nothing in the app imports it.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The interpreter running us is the venv's, so its tools (gunicorn, flask, ...) sit beside it.
VENV_BIN = Path(sys.executable).parent
