"""A stack's Dockerfile asks the engine for nothing outside the stack (ADR 0064).

Each refused case is one a tenant could use: the engine fetches an ``ADD <url>`` on the host's
network, and ``FROM`` / ``COPY --from`` reach any image on the engine.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stack_deployer.build_rules import build_refusal
from stack_deployer.engine import REGISTRY_HINT

BASE = "FROM spinup/base:bookworm\n"


def context(
    dockerfile: str, *, name: str = "Dockerfile", mode: str = "w", link: bool = False
) -> bytes:
    """A build context holding this Dockerfile (under ``name``) and an app file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for member_name, text in ((name, dockerfile), ("app.py", "print(1)\n")):
            data = text.encode()
            member = tarfile.TarInfo(member_name)
            if link and member_name == name:
                member.type, member.linkname = tarfile.SYMTYPE, "app.py"
            else:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "dockerfile",
    [
        BASE + 'COPY app.py /srv/app.py\nCMD ["python3", "/srv/app.py"]\n',
        BASE + 'ADD app.py /srv/\nADD ["app.py", "/srv/again.py"]\n',
        (
            "FROM spinup/base:bookworm AS build\nRUN echo hi > /x\n"
            "FROM build\nCOPY --from=build /x /y\nCOPY --from=0 /x /z\n"
        ),
        "FROM spinup/base:bookworm AS Build\nFROM build\n",
        "FROM spinup/base:bookworm AS b\nRUN true\nFROM scratch\nCOPY --from=b /bin/true /\n",
        BASE + "RUN curl -fsSO https://example.com/tool || true\n",
        # examples/notes-app: the image through a global ARG's default (no build args are given).
        "ARG BASE_IMAGE=spinup/base:bookworm\nFROM ${BASE_IMAGE}\n",
        "ARG BASE_IMAGE='spinup/base:bookworm'\nFROM $BASE_IMAGE AS app\n",
        "ARG UNSET\nFROM ${UNSET:-spinup/base:bookworm}\n",
    ],
)
def test_what_a_build_may_do_is_left_to_the_engine(dockerfile: str) -> None:
    assert build_refusal(context(dockerfile)) is None


@pytest.mark.parametrize(
    ("dockerfile", "said"),
    [
        (BASE + "ADD http://127.0.0.1:59101/metrics /srv/m\n", "ADD takes files of the build"),
        (BASE + "add HTTPS://169.254.169.254/latest/ /m\n", "ADD takes files"),
        (BASE + 'ADD ["http://127.0.0.1:9333/dir/status", "/s"]\n', "ADD takes files"),
        (BASE + "ARG U=http://127.0.0.1:9333/\nADD $U /s\n", "ADD takes files"),
        (BASE + "ADD ht\\\ntp://127.0.0.1/x /s\n", "ADD takes files"),
        ("# escape=`\n" + BASE + "ADD `\n  http://127.0.0.1/x /s\n", "ADD takes files"),
        (BASE + "ADD --checksum=sha256:00 http://x/y /s\n", "ADD takes files"),
        (BASE + "ADD git@github.com:a/b.git /s\n", "ADD takes files"),
        # The engine takes quotes and escapes out of a source before it asks if it is a URL.
        (BASE + "ADD http:\\/\\/127.0.0.1:9333/dir/status /s\n", "ADD takes files"),
        (BASE + 'ADD http:"//"127.0.0.1:9333/dir/status /s\n', "ADD takes files"),
        (BASE + "ADD 'http:'//127.0.0.1:9333/dir/status /s\n", "ADD takes files"),
        (BASE + 'ADD ["http:\\\\/\\\\/127.0.0.1/x", "/s"]\n', "ADD takes files"),
        # A stage is the engine's to name only once it has ended; FROM finds stages by name only.
        ("FROM spinup/base:bookworm AS abc\nCOPY --from=abc / /loot\n", "COPY --from"),
        (BASE + "FROM 0\n", "FROM '0'"),
        # Heredocs: this parser reads them, the engine's classic builder runs their lines.
        (
            BASE + "COPY <<EOF /x\nADD http://127.0.0.1:9333/dir/status /s\nLABEL a=\\\nEOF\n",
            "heredoc",
        ),
        (BASE + "#\x00\nADD http://127.0.0.1/x /s\n", "NUL"),
        (BASE + "#" + "x" * (1024 * 1024) + "\nADD http://127.0.0.1/x /s\n", "larger than"),
        (BASE + "ONBUILD ADD http://127.0.0.1/x /s\n", "ONBUILD is not supported"),
        (BASE + "ONBUILD RUN true\n", "ONBUILD is not supported"),
        (BASE + "onbuild run true\n", "ONBUILD is not supported"),
        ("from spinup-stack/0b7e-web:r1\n", REGISTRY_HINT),
        (BASE + "copy --FROM=spinup-stack/0b7e-web:r1 /app /app\n", "COPY --from"),
        ("FROM spinup-stack/0b7e-web:r1\n", REGISTRY_HINT),
        ("FROM python:3.12-slim\n", REGISTRY_HINT),
        ("FROM spinup/gateway:latest\n", "other stacks' or the platform's"),
        ("ARG IMAGE=spinup-stack/0b7e-web:r1\nFROM ${IMAGE}\n", REGISTRY_HINT),
        ("ARG IMAGE\nFROM ${IMAGE:-spinup-stack/0b7e-web:r1}\n", REGISTRY_HINT),
        ("ARG IMAGE=x\nFROM ${IMAGE:+spinup/base:bookworm}\n", "named without a variable"),
        (BASE + "ARG IMAGE=spinup/base:bookworm\nFROM $IMAGE\n", "named without a variable"),
        (BASE + "COPY --from=spinup-stack/0b7e-web:r1 /app /app\n", "COPY --from"),
        (BASE + "COPY --from=1 /x /y\n", "COPY --from"),
        ("FROM build\n" + BASE, "FROM 'build'"),
    ],
)
def test_what_would_reach_outside_the_stack_is_refused_saying_what_to_do(
    dockerfile: str, said: str
) -> None:
    refusal = build_refusal(context(dockerfile))
    assert refusal is not None
    assert said in refusal


@pytest.mark.parametrize(
    "names",
    [
        ["x/../Dockerfile"],
        ["/Dockerfile"],
        [".//Dockerfile"],
        ["././Dockerfile"],
        ["Dockerfile", "x/../Dockerfile"],
        ["Dockerfile", "Dockerfile"],
        ["x/Dockerfile"],  # what Python reads of a V7 or GNU header whose prefix Go ignores
        ["DOCKERFILE"],
    ],
)
def test_a_dockerfile_the_engine_could_find_elsewhere_is_refused(names: list[str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in zip(names, [BASE, BASE + "ADD http://127.0.0.1/x /s\n"], strict=False):
            member = tarfile.TarInfo(name)
            member.size = len(text)
            tar.addfile(member, io.BytesIO(text.encode()))
    assert "one Dockerfile, at its root" in (build_refusal(buffer.getvalue()) or "")


def test_the_dockerfile_is_found_as_the_engine_finds_it() -> None:
    url = BASE + "ADD http://127.0.0.1/x /s\n"
    assert build_refusal(context(url, name="./Dockerfile")) is not None
    assert build_refusal(context(url, name="dockerfile")) is not None  # the engine's fallback
    assert build_refusal(context(url, mode="w:gz")) is not None
    assert build_refusal(context(url, mode="w:xz")) is not None
    assert "not a link" in (build_refusal(context(url, link=True)) or "")
    assert build_refusal(context(url, name="Other")) is None  # no Dockerfile: the engine says so
    assert "not a tar archive" in (build_refusal(b"not a tarball") or "")


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "examples").rglob("Dockerfile"))
)
def test_the_examples_build(path: Path) -> None:
    assert build_refusal(context(path.read_text())) is None
