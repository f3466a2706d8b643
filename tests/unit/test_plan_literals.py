"""No tier name and no plan limit is written in service code: plans.yaml is the only place.

Every ``.py`` under ``services/`` and ``shared/`` is parsed and refused if it holds
(a) a string constant equal to a tier name of ``plans.yaml``, or
(b) a plan field name (a field of a kind's limits, of the caps or the rate limit, or
    ``ttl_seconds``) bound to a number written in the code: a keyword argument, a parameter
    default, an assignment (to a name, an attribute or a subscript), an annotated assignment or
    a dict entry. "A number" is any expression made only of numeric literals (``24 * 3600``)
    whose value a plan could hold: plans.yaml only accepts positive limits, so 0 or -1 (a
    protocol's "off" or "unlimited", as in a NATS account JWT) cannot repeat it.
Names are compared without case and leading underscores, so ``_STORAGE_MB = 10`` counts too.

``shared/testing`` is left out: contract factories for the test suites, whose made-up limits
and tier are test data. A test here keeps it so by proving no service or shared module imports it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.contracts.kinds import LIMITS_BY_KIND
from shared.plans import Caps, ExportLimits, Lifetime, RateLimit, load_plans
from shared.testing.source import parse_python

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("services", "shared")
TEST_SUPPORT = REPO_ROOT / "shared" / "testing"


def tier_names() -> frozenset[str]:
    return frozenset(load_plans(REPO_ROOT / "plans.yaml").tiers)


def plan_field_names() -> frozenset[str]:
    structs = [*LIMITS_BY_KIND.values(), Caps, RateLimit, Lifetime, ExportLimits]
    names = {field.name for struct in structs for field in msgspec.structs.fields(struct)}
    return frozenset({*names, "ttl_seconds"})


_ARITHMETIC: dict[type[ast.operator | ast.unaryop], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def number_written(node: ast.expr | None) -> float | None:
    """The value of ``node`` if it is a number written in the code (literals, arithmetic)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    op: ast.unaryop | ast.operator
    if isinstance(node, ast.UnaryOp):
        op, operands = node.op, [node.operand]
    elif isinstance(node, ast.BinOp):
        op, operands = node.op, [node.left, node.right]
    else:
        return None
    values = [number_written(operand) for operand in operands]
    if type(op) not in _ARITHMETIC or any(value is None for value in values):
        return None
    try:
        return float(_ARITHMETIC[type(op)](*values))
    except ArithmeticError:
        return math.inf  # a number all the same: better a false alarm than a missed limit


def _target_name(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if (
        isinstance(target, ast.Subscript)
        and isinstance(target.slice, ast.Constant)
        and isinstance(target.slice.value, str)
    ):
        return target.slice.value
    return None


Binding = tuple[str, ast.expr | None, int]


def _assigned(node: ast.Assign) -> Iterator[Binding]:
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            pairs = list(zip(target.elts, node.value.elts, strict=False))
        else:
            pairs = [(target, node.value)]
        for each, value in pairs:
            if (name := _target_name(each)) is not None:
                yield name, value, node.lineno


def _defaults(node: ast.arguments) -> Iterator[Binding]:
    positional = [*node.posonlyargs, *node.args]
    with_defaults = positional[len(positional) - len(node.defaults) :]
    for arg, default in zip(with_defaults, node.defaults, strict=True):
        yield arg.arg, default, arg.lineno
    for arg, kw_default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
        yield arg.arg, kw_default, arg.lineno


def _bindings(tree: ast.AST) -> Iterator[Binding]:
    """Every (name, value, line) the code binds: the places a limit could be written down."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg is not None:
            yield node.arg, node.value, node.value.lineno
        elif isinstance(node, ast.Assign):
            yield from _assigned(node)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            if (name := _target_name(node.target)) is not None:
                yield name, node.value, node.lineno
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.value, value, key.lineno
        elif isinstance(node, ast.arguments):
            yield from _defaults(node)


def plan_literals(source: str, tiers: frozenset[str], fields: frozenset[str]) -> list[str]:
    """Every tier name or plan limit written in ``source``, as ``line: what`` strings."""
    tree = parse_python(source)
    found = [
        f"{node.lineno}: tier name {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in tiers
    ]
    for name, value, line in _bindings(tree):
        number = number_written(value)
        # plans.yaml holds positive numbers only: 0 or -1 (a protocol's "off" or "unlimited")
        # cannot repeat one of its limits.
        if name.lower().lstrip("_") in fields and number is not None and number > 0:
            found.append(f"{line}: {name} = {number:g}")
    return sorted(found, key=lambda entry: int(entry.split(":", 1)[0]))


def service_sources() -> list[Path]:
    return sorted(
        path
        for top in SCANNED_DIRS
        for path in (REPO_ROOT / top).rglob("*.py")
        if not path.is_relative_to(TEST_SUPPORT)
    )


def test_test_support_left_out_of_the_scan_is_used_by_tests_only() -> None:
    for path in service_sources():
        for node in ast.walk(parse_python(path.read_text())):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{alias.name}" for alias in node.names]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            assert not [m for m in modules if m.startswith("shared.testing")], path


def test_the_scan_covers_every_service_and_the_plan_vocabulary() -> None:
    scanned = {path.relative_to(REPO_ROOT).parts[:2] for path in service_sources()}
    services = {("services", d.name) for d in (REPO_ROOT / "services").iterdir() if d.is_dir()}
    assert services <= scanned
    assert (REPO_ROOT / "shared" / "plans.py") in service_sources()
    assert {"ttl_seconds", "active_per_kind", "provisions_per_minute", "storage_mb"} <= (
        plan_field_names()
    )
    assert len(tier_names()) > 1


@pytest.mark.parametrize("path", service_sources(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_tier_name_or_limit_in_service_code(path: Path) -> None:
    found = plan_literals(path.read_text(), tier_names(), plan_field_names())
    assert not found, f"{path.relative_to(REPO_ROOT)} repeats plans.yaml: {found}"


TIERS = frozenset({"anonymous", "free", "pro"})
FIELDS = frozenset({"storage_mb", "connections", "ttl_seconds", "active_per_kind"})


@pytest.mark.parametrize(
    "snippet",
    [
        'tier = "free"',
        'if principal.tier == "pro": pass',
        "PostgresLimits(storage_mb=10, connections=conn)",
        "limits = {'storage_mb': 10}",
        "STORAGE_MB = 10",
        "_storage_mb: int = 10",
        "self.connections = 5",
        "settings['ttl_seconds'] = 24 * 3600",
        "ttl_seconds = +3",
        "def make(*, connections: int = 5) -> None: pass",
        "def make(storage_mb=1.5): pass",
        "storage_mb, other = 10, name",
        "active_per_kind += 1",
    ],
)
def test_the_scan_catches_a_written_down_plan(snippet: str) -> None:
    assert plan_literals(snippet, TIERS, FIELDS), snippet


def test_the_scan_finds_the_made_up_plan_of_the_test_factories() -> None:
    # Real code with written-down limits and a tier name, left out of the scan only because
    # it is test data: proof the scan would catch the same in a service.
    found = plan_literals(
        (TEST_SUPPORT / "factories.py").read_text(), tier_names(), plan_field_names()
    )
    assert any("storage_mb" in entry for entry in found)
    assert any("tier name" in entry for entry in found)


@pytest.mark.parametrize(
    "snippet",
    [
        "PostgresLimits(storage_mb=tier.storage_mb, connections=limits.connections)",
        "storage_mb = quota_bytes // (1024 * 1024)",
        "limits = {'storage_mb': value}",
        "connections = None",
        "streams: int = 0",
        "connections = -1",
        "storage_mb = 1 - 1",
        "enabled = True",
        "page_size = 10",
        'message = "free plan"',
        'tier = plans.account_tier  # e.g. "free"',
        "def make(*, connections: int) -> None: pass",
        "self.connections = len(pool)",
    ],
)
def test_the_scan_lets_plan_driven_code_through(snippet: str) -> None:
    assert plan_literals(snippet, TIERS, FIELDS) == [], snippet
