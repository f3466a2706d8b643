"""A service started without its settings stops at once and names what is missing."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "first_missing"),
    [
        ("gateway", "SPINUP_PUBLIC_URL"),
        ("pg_provisioner", "SPINUP_NATS_URL"),
        ("redis_provisioner", "SPINUP_NATS_URL"),
        ("mongo_provisioner", "SPINUP_NATS_URL"),
        ("queue_provisioner", "SPINUP_NATS_URL"),
        ("storage_provisioner", "SPINUP_S3_ENDPOINT"),
        ("reaper", "SPINUP_NATS_URL"),
    ],
)
def test_missing_setting_stops_start_up_with_its_name(module: str, first_missing: str) -> None:
    result = subprocess.run(  # noqa: S603  (our own interpreter and module names)
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert first_missing in result.stderr
    assert "Traceback" not in result.stderr


#: What a worker needs before it reads its other settings (none is reached: start-up stops first).
_WORKER_BASICS = {
    "SPINUP_NATS_URL": "nats://127.0.0.1:1",
    "SPINUP_PLATFORM_DSN": "postgresql://nobody@127.0.0.1:1/none",
    "SPINUP_SEAL_KEYS": "unused",
}


@pytest.mark.parametrize(
    ("module", "settings", "said"),
    [
        ("gateway", {"SPINUP_HTTP_PROCESSES": "0"}, "SPINUP_HTTP_PROCESSES must be 1 or more"),
        # A sweep that measures none of its time would never measure anything (docs/adr/0044).
        (
            "redis_provisioner",
            {**_WORKER_BASICS, "SPINUP_USAGE_SWEEP_DUTY": "0"},
            "SPINUP_USAGE_SWEEP_DUTY must be above 0 and at most 1, got 0.0",
        ),
        # The S3 gateway's gRPC is S3's port + 10000 unless SPINUP_S3_GATEWAY_GRPC names it.
        (
            "storage_provisioner",
            {
                **_WORKER_BASICS,
                "SPINUP_S3_ENDPOINT": "https://s3.example",
                "SPINUP_S3_FILER": "filer:8888",
                "SPINUP_S3_ADMIN_ACCESS_KEY": "unused",
                "SPINUP_S3_ADMIN_SECRET_KEY": "unused",
                "SPINUP_S3_MASTER": "master:9333",
            },
            "SPINUP_S3_ENDPOINT must be host:port (or a URL with both)",
        ),
        # So is the master's, from SPINUP_S3_MASTER, unless SPINUP_S3_MASTER_GRPC names it.
        (
            "storage_provisioner",
            {
                **_WORKER_BASICS,
                "SPINUP_S3_ENDPOINT": "http://s3:8333",
                "SPINUP_S3_FILER": "filer:8888",
                "SPINUP_S3_ADMIN_ACCESS_KEY": "unused",
                "SPINUP_S3_ADMIN_SECRET_KEY": "unused",
                "SPINUP_S3_MASTER": "master",
            },
            "SPINUP_S3_MASTER must be host:port (or a URL with both)",
        ),
    ],
)
def test_a_setting_out_of_range_stops_start_up_with_its_name(
    module: str, settings: dict[str, str], said: str
) -> None:
    result = subprocess.run(  # noqa: S603  (our own interpreter and module names)
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr
