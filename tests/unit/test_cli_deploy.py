"""``spinup deploy``'s packing: each service's build context found and tarred as its `build:`."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from spinup_cli.api import CliError
from spinup_cli.main import stack_upload

REPO_ROOT = Path(__file__).resolve().parents[2]


def names_in(tarball: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        return set(tar.getnames())


def test_the_example_is_packed_one_tarball_per_build() -> None:
    files = stack_upload(REPO_ROOT / "examples" / "notes-app")
    assert set(files) == {"spinup.yaml", "web.tar", "worker.tar"}
    assert names_in(files["web.tar"][1]) == {"Dockerfile", "app.py"}
    assert names_in(files["worker.tar"][1]) == {"Dockerfile", "worker.py"}


def test_a_tarball_next_to_the_manifest_is_sent_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "spinup.yaml").write_text("services:\n  api: {build: api.tar, port: 80}\n")
    (tmp_path / "api.tar").write_bytes(b"ready-made")
    assert stack_upload(tmp_path)["api.tar"] == ("api.tar", b"ready-made")


def test_a_missing_context_says_where_it_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "spinup.yaml").write_text("services:\n  api: {build: api.tar}\n")
    with pytest.raises(CliError, match=r"services\.api\.build"):
        stack_upload(tmp_path)


def test_a_directory_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"no spinup\.yaml"):
        stack_upload(tmp_path)
