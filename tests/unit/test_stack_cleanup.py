"""A throwaway stack leaves its logs behind when it exits, not its data; a kept one keeps both."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.profile import Profile
from devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root() -> Iterator[Path]:
    """A repository root the postgres user may traverse (pytest's tmp_path is private to us)."""
    directory = Path(tempfile.mkdtemp(prefix="spinup-stack-cleanup-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def stack_with_files(profile: Profile) -> Stack:
    """A stack never started, with a file in its data and in its logs (the tests only exit it)."""
    shutil.copy(REPO_ROOT / "plans.yaml", profile.root / "plans.yaml")
    for directory in (profile.data_dir / "customer-pg", profile.logs_dir):
        directory.mkdir(parents=True)
        (directory / "written").write_text("x")
    return Stack(profile)


def test_a_throwaway_stack_removes_its_data_and_keeps_its_logs(root: Path) -> None:
    profile = Profile.test(root, name="throwaway")
    stack_with_files(profile).__exit__(None, None, None)
    assert not profile.data_dir.exists()
    assert (profile.logs_dir / "written").read_text() == "x"


def test_the_make_run_stack_keeps_its_data(root: Path) -> None:
    profile = Profile.dev(root)
    stack_with_files(profile).__exit__(None, None, None)
    assert (profile.data_dir / "customer-pg" / "written").read_text() == "x"
