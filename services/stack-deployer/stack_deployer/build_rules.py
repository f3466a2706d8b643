"""What a stack's Dockerfile may not ask of the engine, checked before the engine sees it.

Why this exists (ADR 0064): a build's ``RUN`` steps run on the stack's own network, under its
egress rules, but the engine does some of a build's work itself, in its own process on the
host's network, where no stack's rules apply:

- ``ADD <url>`` is downloaded by the engine. An anonymous stack's build fetched the platform's
  loopback-only metrics, and ``ADD http://127.0.0.1:<master>/col/delete?collection=<bucket>``
  deleted another tenant's S3 data through SeaweedFS's master, which trusts its host.
- ``FROM`` and ``COPY --from`` take any image on the engine: another stack's build (its tag
  follows from the stack's public id) or the platform's own images, and with them their files.
- ``ONBUILD`` runs its instruction later, in a stage built ``FROM`` this one.

So a Dockerfile may build only ``FROM`` a base image stacks are given, ``scratch`` or an earlier
stage of its own, ``COPY --from`` only those, ``ADD`` only files of its build context, and no
``ONBUILD``. ``FROM`` may name its image through a global ``ARG``'s default (no build arguments
are passed); any other variable where an image or an ``ADD`` source goes is refused: it could
become anything.
The Dockerfile is read with the engine's own parser (the ``dockerfile`` package wraps
buildkit's), so continuations, escapes and JSON forms are split as the engine splits them.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile

import dockerfile

from shared.contracts.stacks import BASE_IMAGES
from stack_deployer.engine import REGISTRY_HINT

#: Where the classic builder looks for the Dockerfile in a context: this name, then lowercase.
DOCKERFILE_NAMES = ("Dockerfile", "dockerfile")
#: The largest Dockerfile checked; a larger one is refused, not read in part.
_MAX_DOCKERFILE_BYTES = 1024 * 1024
_BASES = ", ".join(sorted(BASE_IMAGES))
#: The engine's empty image: a build FROM it holds only what it copies in.
_SCRATCH = "scratch"


def build_refusal(context: bytes) -> str | None:
    """Why the engine must not build ``context`` (a tarball, plain or compressed), or None.

    A context without a Dockerfile is left to the engine, which says so itself.
    """
    try:
        text = _dockerfile_of(context)
    except tarfile.TarError:
        return "the build context is not a tar archive (plain, gzip, bzip2 or xz)"
    except _UnclearDockerfileError as exc:
        return str(exc)
    return None if text is None else _text_refusal(text)


def _text_refusal(text: str) -> str | None:
    if "\x00" in text:
        return "the Dockerfile holds a NUL byte"
    try:
        instructions = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        return f"the Dockerfile does not parse: {exc}"
    if any(instruction.heredocs for instruction in instructions):
        # This parser reads heredocs; the engine's classic builder does not, and would run the
        # lines of one as instructions.
        return "the Dockerfile uses a heredoc (<<), which this engine's builder does not support"
    return _refusal(instructions)


class _UnclearDockerfileError(Exception):
    """The context's Dockerfile cannot be told apart as the engine would find it."""


def _dockerfile_of(context: bytes) -> str | None:
    """The context's Dockerfile, found as the engine finds it, or None.

    The engine unpacks the context (cleaning each name, a later entry replacing an earlier
    one) and reads ``Dockerfile``, else ``dockerfile``. Rather than follow every way a name can
    be spelled, a context may hold a file of either name only once, at its root, as a plain
    file under a plain name.
    """
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:*") as tar:
        found: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            if posixpath.basename(posixpath.normpath(member.name)).lower() != "dockerfile":
                continue
            if (name := member.name.removeprefix("./")) not in DOCKERFILE_NAMES or name in found:
                msg = "a build context holds one Dockerfile, at its root (named Dockerfile)"
                raise _UnclearDockerfileError(msg)
            if not member.isfile():
                msg = f"the build context's {member.name} must be a plain file, not a link"
                raise _UnclearDockerfileError(msg)
            found[name] = member
        for name in DOCKERFILE_NAMES:
            if name in found:
                if found[name].size > _MAX_DOCKERFILE_BYTES:
                    msg = f"the Dockerfile is larger than {_MAX_DOCKERFILE_BYTES} bytes"
                    raise _UnclearDockerfileError(msg)
                read = tar.extractfile(found[name])
                return read.read().decode("utf-8", errors="replace") if read else ""
    return None


def _refusal(instructions: tuple[dockerfile.Command, ...]) -> str | None:
    stages: list[str] = []
    # ARGs before the first FROM, with their defaults: the deployer passes no build arguments,
    # so ``FROM ${BASE_IMAGE}`` names what the default says (the examples are written so).
    global_args: dict[str, str] = {}
    for instruction in instructions:
        command = instruction.cmd.upper()
        if command == "ARG" and not stages:
            global_args.update(_declared(instruction.value))
        if command == "FROM" and instruction.value:
            expanded = _expanded(instruction.value[0], global_args)
            instruction = instruction._replace(value=(expanded, *instruction.value[1:]))  # noqa: PLW2901
        problem = _problem(instruction, stages)
        if problem is not None:
            at = f"line {instruction.start_line}: {instruction.original.strip()[:120]}"
            return f"{at}: {problem}"
        if command == "FROM":
            named = len(instruction.value) >= 3 and instruction.value[1].lower() == "as"  # noqa: PLR2004
            stages.append(instruction.value[2].lower() if named else "")
    return None


def _problem(instruction: dockerfile.Command, stages: list[str]) -> str | None:
    """What is wrong with one instruction, given the stages before it."""
    # The engine takes instructions in any case; the parser keeps the case they were written in.
    command = instruction.cmd.upper()
    if command == "ONBUILD":
        return "ONBUILD is not supported; write the instruction in the stage itself"
    if command == "FROM":
        # The engine finds an earlier stage for FROM by its name only: digits name an image.
        image = instruction.value[0] if instruction.value else ""
        named = image if not image.isdigit() else ""
        return None if _may_build_from(named, stages) else _image_refused("FROM", image)
    if command == "COPY":
        for flag in instruction.flags:
            if flag.lower().startswith("--from="):
                source = flag.split("=", 1)[1]
                # A stage is the engine's to name only once it has ended: the current one's
                # name (the last of ``stages``) would be looked up as an image.
                if not _may_build_from(source, stages[:-1]):
                    return _image_refused("COPY --from", source)
    if command == "ADD" and any(_maybe_remote(source) for source in instruction.value[:-1]):
        return (
            "ADD takes files of the build context only. The engine fetches an ADD <url>"
            " itself, outside the stack's network rules: download with RUN (curl, python3)"
            " where the plan lets the stack reach the internet, or put the file in the build"
            " context."
        )
    return None


def _maybe_remote(source: str) -> bool:
    """An ``ADD`` source the engine might fetch: a URL, or anything it rewrites before looking.

    The engine takes quotes, escapes and variables out of a source before it asks whether it is
    a URL (a backslash before each slash, ``'http:'//…``), so a source holding any of them is
    refused.
    """
    return "://" in source or source.startswith("git@") or any(c in source for c in "$\\\"'`")


def _declared(values: tuple[str, ...]) -> dict[str, str]:
    """``ARG`` names with their defaults (quotes taken off; none: empty)."""
    declared = {}
    for item in values:
        name, _, default = item.partition("=")
        if len(default) >= 2 and default[0] == default[-1] and default[0] in "\"'":  # noqa: PLR2004
            default = default[1:-1]
        declared[name] = default
    return declared


#: ``$NAME``, ``${NAME}`` and ``${NAME:-word}`` / ``${NAME-word}``: what a FROM line may use.
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::?-([^}$]*))?\}|(\w+))")


def _expanded(text: str, args: dict[str, str]) -> str:
    """``text`` with the global ARGs' defaults put in; any other form keeps its ``$``."""

    def value(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(3)
        if args.get(name):
            return args[name]
        return found.group(2) or ""

    return _VARIABLE.sub(value, text)


def _may_build_from(image: str, stages: list[str]) -> bool:
    """A base image stacks are given, ``scratch`` (nothing), or an earlier stage."""
    if "$" in image:
        return False
    if image in BASE_IMAGES or image == _SCRATCH:
        return True
    if image.isdigit():
        return int(image) < len(stages)
    return bool(image) and image.lower() in stages


def _image_refused(instruction: str, image: str) -> str:
    return (
        f"{instruction} {image!r}: a stack builds from {_BASES} or an earlier stage of its own"
        " Dockerfile, named without a variable; other images on the engine are other stacks'"
        f" or the platform's. {REGISTRY_HINT}"
    )
