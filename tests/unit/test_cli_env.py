"""The CLI's ``.env`` rules (ADR 0026): the names SDKs read, and blocks kept true by id."""

from __future__ import annotations

from pathlib import Path

from spinup_cli.dotenv import block_ids, block_keys, remove_block, replace_values, write_block
from spinup_cli.main import KINDS, env_keys, env_values

DB_ID = "11111111-2222-3333-4444-555555555555"
CACHE_ID = "66666666-7777-8888-9999-000000000000"
BUCKET = {
    "id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "connection_url": None,
    "credentials": {
        "type": "s3",
        "endpoint": "http://127.0.0.1:8333",
        "region": "us-east-1",
        "bucket": "t-bucket",
        "access_key": "AKID",
        "secret_key": "s3cr3t",
    },
}


def test_a_bucket_is_written_with_the_names_aws_sdks_read(tmp_path: Path) -> None:
    values = env_values(KINDS["storage"], "S3", BUCKET, tmp_path / ".env")
    assert values == {
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8333",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_BUCKET": "t-bucket",
    }
    assert set(values) == env_keys(KINDS["storage"], "S3")


def test_a_second_bucket_under_another_key_carries_the_prefix_everywhere(tmp_path: Path) -> None:
    values = env_values(KINDS["storage"], "UPLOADS", BUCKET, tmp_path / ".env")
    assert set(values) == {
        "UPLOADS_ACCESS_KEY_ID",
        "UPLOADS_SECRET_ACCESS_KEY",
        "UPLOADS_ENDPOINT_URL",
        "UPLOADS_REGION",
        "UPLOADS_BUCKET",
    }


def test_a_cache_is_written_with_its_key_prefix(tmp_path: Path) -> None:
    cache = {
        "id": CACHE_ID,
        "connection_url": "redis://u:p@127.0.0.1:6390/0",
        "credentials": {"type": "redis", "key_prefix": "t_abc:"},
    }
    values = env_values(KINDS["cache"], "REDIS_URL", cache, tmp_path / ".env")
    assert values == {"REDIS_URL": "redis://u:p@127.0.0.1:6390/0", "REDIS_KEY_PREFIX": "t_abc:"}
    other = env_values(KINDS["cache"], "SESSIONS_URL", cache, tmp_path / ".env")
    assert set(other) == {"SESSIONS_URL", "SESSIONS_KEY_PREFIX"}


def two_blocks(path: Path) -> None:
    path.write_text("# mine\nAPP_MODE=dev\n")
    write_block(path, [f"Postgres database, id {DB_ID}, tier anonymous."], {"DATABASE_URL": "pg1"})
    write_block(
        path,
        [f"Redis cache, id {CACHE_ID}, tier anonymous.", "Manage it: spinup rm spn_x"],
        {"REDIS_URL": "r1", "REDIS_KEY_PREFIX": "t_abc:"},
    )


def test_rotate_replaces_only_that_resources_values(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    two_blocks(env_file)
    changed = replace_values(env_file, CACHE_ID, {"REDIS_URL": "r2 with space"})
    assert changed == ["REDIS_URL"]
    text = env_file.read_text()
    assert "REDIS_URL='r2 with space'" in text
    assert "REDIS_KEY_PREFIX=t_abc:" in text
    assert "DATABASE_URL=pg1" in text
    assert replace_values(env_file, "00000000-0000-0000-0000-000000000000", {"X": "y"}) == []


def test_rm_removes_the_block_and_leaves_the_rest_as_it_was(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# mine\nAPP_MODE=dev\n")
    before = env_file.read_text()
    two_blocks(env_file)
    assert block_keys(env_file, CACHE_ID) == ["REDIS_URL", "REDIS_KEY_PREFIX"]
    assert remove_block(env_file, CACHE_ID) == ["REDIS_URL", "REDIS_KEY_PREFIX"]
    assert remove_block(env_file, DB_ID) == ["DATABASE_URL"]
    assert env_file.read_text() == before
    assert remove_block(env_file, DB_ID) == []


def test_force_finds_the_resource_whose_settings_it_replaces(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    two_blocks(env_file)
    assert block_ids(env_file, {"DATABASE_URL"}) == [DB_ID]
    assert block_ids(env_file, {"REDIS_KEY_PREFIX"}) == [CACHE_ID]
    assert block_ids(env_file, {"APP_MODE"}) == []
