import asyncio
import os
import time
from pathlib import Path

from shared.observability import health


async def test_heartbeat_says_ready_while_connected_and_disappears_at_stop(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    connected = True
    async with health.heartbeat(beat, lambda: connected):
        await asyncio.sleep(0)
        assert health.heartbeat_problem(beat, need_ready=True) is None
    assert not beat.exists()
    assert "no heartbeat" in (health.heartbeat_problem(beat, need_ready=False) or "")


async def test_alive_but_not_ready_while_nats_is_down(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    async with health.heartbeat(beat, lambda: False):
        await asyncio.sleep(0)
        assert health.heartbeat_problem(beat, need_ready=False) is None
        assert "not ready" in (health.heartbeat_problem(beat, need_ready=True) or "")


def test_a_stale_heartbeat_means_a_stuck_loop(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    beat.write_text("ready\n")
    old = time.time() - health.MAX_AGE_S - 5
    os.utime(beat, (old, old))
    assert "stuck or dead" in (health.heartbeat_problem(beat, need_ready=False) or "")
    assert health.main(["--live", "--file", str(beat)]) == 1


def test_no_heartbeat_file_configured_is_unhealthy(monkeypatch) -> None:
    monkeypatch.delenv(health.HEARTBEAT_SETTING, raising=False)
    assert health.main([]) == 1


def test_http_check_of_a_closed_port_is_unhealthy() -> None:
    assert "does not answer" in (health.http_problem("http://127.0.0.1:9/readyz", 1.0) or "")
