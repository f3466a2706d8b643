"""compose/ as Debian's docker-compose 1.29 reads it: the one place the deploy tests run it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"


def compose(
    cwd: Path, *args: str, env_file: Path = ENV_EXAMPLE
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose`` on compose.yaml with ``env_file`` (the example by default)."""
    return subprocess.run(  # noqa: S603  (our own arguments)
        [  # noqa: S607  (docker-compose from PATH, where Debian puts it)
            "docker-compose",
            "--file",
            str(COMPOSE_DIR / "compose.yaml"),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def rendered(tmp_path: Path, **overrides: str) -> dict[str, Any]:
    """``docker-compose config`` with .env.example, some of its variables replaced."""
    env_file = ENV_EXAMPLE
    if overrides:
        lines = ENV_EXAMPLE.read_text().splitlines()
        env = [line for line in lines if line.split("=", 1)[0] not in overrides]
        env += [f"{key}={value}" for key, value in overrides.items()]
        env_file = tmp_path / "compose.env"
        env_file.write_text("\n".join(env) + "\n")
    done = compose(tmp_path, "config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config
