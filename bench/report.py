"""Writes a run's results: ``results.json``, ``results.md`` (tables) and ``latency.png`` (chart)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.cpu import LOAD_GENERATOR
from bench.harness import Results, Row

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
CHART_NAME = "latency.png"


def write(results: Results, directory: Path, samples: list[Row]) -> list[Path]:
    """Write every file of ``results`` into ``directory``; ``samples``: rows for the chart."""
    directory.mkdir(parents=True, exist_ok=True)
    data = results.as_dict()
    written = [directory / JSON_NAME, directory / MARKDOWN_NAME, directory / CHART_NAME]
    written[0].write_text(json.dumps(data, indent=1) + "\n")
    written[1].write_text(markdown(data))
    chart(samples, written[2])
    return written


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"  # noqa: PLR2004 (digits that matter)


def _table(rows: list[dict[str, Any]], *, with_floor: bool) -> list[str]:
    head = "| What | c | calls | errors | p50 ms | p90 ms | p99 ms | max ms | req/s |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    with_cpu = any(row.get("cpu_ms_per_call") is not None for row in rows)
    if with_cpu:
        head += " CPU ms/call | stack ms/call | CPU allows /s |"
        rule += "---:|---:|---:|"
    if with_floor:
        head += " floor p50 ms | floor req/s | p50 x floor | req/s x floor |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for row in rows:
        line = (
            f"| {row['name']} | {row['concurrency']} | {row['calls']} | {row['errors']} "
            f"| {_ms(row['p50_ms'])} | {_ms(row['p90_ms'])} | {_ms(row['p99_ms'])} "
            f"| {_ms(row['max_ms'])} | {row['per_s']:.0f} |"
        )
        if with_cpu:
            allows = row.get("cpu_bound_per_s")
            shown = "-" if allows is None else f"{allows:.0f}"
            line += f" {_ms(row.get('cpu_ms_per_call'))} | {_ms(stack_cpu_ms(row))} | {shown} |"
        if with_floor:
            floor = row.get("floor")
            if floor is None:
                line += " - | - | - | - |"
            else:
                line += (
                    f" {_ms(floor['p50_ms'])} | {floor['per_s']:.0f} "
                    f"| {_ratio(row.get('p50_ratio'))} | {_ratio(row.get('per_s_ratio'))} |"
                )
        lines.append(line)
    return lines


def stack_cpu_ms(row: dict[str, Any]) -> float | None:
    """A row's CPU per call without the load generator's: what the platform itself spent."""
    total = row.get("cpu_ms_per_call")
    by_process = row.get("cpu_ms_by_process")
    if total is None or not by_process:
        return None
    return float(total) - float(by_process.get(LOAD_GENERATOR, 0.0))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def disk_used(machine: dict[str, Any]) -> str:
    """The data disk's fullness for the machine line; nothing for runs that did not record it."""
    used = machine.get("disk_used_percent")
    return "" if used is None else f", data disk {used} % full"


def round_trip(machine: dict[str, Any]) -> str:
    """A loopback round trip between two processes, for the machine line (older runs: none)."""
    measured = machine.get("message_round_trip")
    if measured is None:
        return ""
    return (
        f", a loopback round trip between two processes {measured['round_trip_us']} µs"
        f" ({measured['cpu_us']} µs of CPU)"
    )


def markdown(data: dict[str, Any]) -> str:
    """The results as Markdown: machine, versions, then one table per group."""
    machine, versions = data["machine"], data["versions"]
    lines = [
        (
            f"# Benchmark results ({data['mode']} run, {data['started_at']},"
            f" {data['duration_s']:.0f} s)"
        ),
        "",
        (
            f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB,"
            f" kernel {machine['kernel']}, load average at start {machine['load_average']}"
            f"{disk_used(machine)}{round_trip(machine)}."
        ),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "",
        (
            "Latencies in milliseconds; `c` is how many callers ran at once; `req/s` counts"
            " successful calls per second of wall time. The floor of `POST /<kind>/new` is the same"
            " kind's driver `create` at the same `c`; `p50 x floor` is the end-to-end median"
            " divided by the floor's. `CPU ms/call` is the CPU every process of the stack and the"
            " load generator spent during the measurement, per call (`bench/cpu.py`), and `stack"
            " ms/call` the same without the load generator's; `CPU allows"
            " /s` is the cores over it: the most calls a second this machine could make at that"
            " cost, so a `req/s` near it is bound by the CPU of the whole path."
        ),
        "",
    ]
    rows = data["rows"]
    groups: list[str] = []
    for row in rows:
        if row["group"] not in groups:
            groups.append(row["group"])
    titles = {
        "floor": "Gateway floor (HTTP alone, NATS alone)",
        "raw create": "Raw backend create (the driver, as the provisioner calls it)",
        "raw delete": "Raw backend delete",
        "read": "GET /resources/{token}",
        "webhook capture": "Webhook capture",
        "reaper": "POST /db/new while the reaper deletes expired databases",
        "s3 tenants": "S3 with few and many tenants (the driver; issue 18)",
        "delete": "DELETE /resources/{token} of everything the run made",
        "profile": "POST /cache/new while py-spy records the gateway",
    }
    for group in groups:
        picked = [row for row in rows if row["group"] == group]
        title = titles.get(group, f"End to end: POST /<kind>/new{group.removeprefix('end to end')}")
        lines += [f"## {title}", ""]
        lines += _table(picked, with_floor=any("floor" in row for row in picked))
        lines.append("")
    capture = data["webhook_capture"]
    if capture:
        lines += [
            (
                f"Webhook capture: {capture['sent']} requests of {capture['body_bytes']} bytes at"
                f" c={capture['concurrency']} over {capture['receivers']} receivers:"
                f" {capture['answered']} answered, {capture['stored']} stored,"
                f" {capture['lost']} lost, {capture['per_s']:.0f} req/s."
            ),
            "",
        ]
    scaling = data.get("s3_tenants")
    if scaling:
        lines += [
            (
                f"S3 create (driver, c=1) with {scaling['few_tenants']} tenants: p50"
                f" {scaling['few_p50_ms']} ms; with {scaling['many_tenants']}:"
                f" {scaling['many_p50_ms']} ms (ratio {scaling['ratio']}). Pre-load at c=16:"
                f" {scaling['preload_per_s']}/s; rotate at c=16 with"
                f" {scaling['many_tenants']}: p50 {scaling['rotate_p50_ms']} ms."
            ),
            "",
        ]
    reaper = data["reaper"]
    if reaper:
        lines += [
            (
                f"Reaper: {reaper['expired_databases']} databases expired (TTL {reaper['ttl_s']} s;"
                f" all made before the first expired: {reaper['all_created_before_first_expiry']});"
                f" it deleted {reaper['deleted']} of them within {reaper['deleted_within_s']} s"
                f" ({reaper['deletes_per_s']}/s). POST /db/new, one call at most every"
                f" {reaper['probe_interval_s']} s: p99 {reaper['idle_p99_ms']} ms idle,"
                f" {reaper['busy_p99_ms']} ms while it deleted ({reaper['p99_ratio']} times);"
                f" p50 {reaper['idle_p50_ms']} ms idle, {reaper['busy_p50_ms']} ms deleting."
                f" Not served by the warm pool (a cold create): {reaper['idle_cold']} of"
                f" {reaper['idle_probes']} probes idle, {reaper['busy_cold']} of"
                f" {reaper['busy_probes']} while it deleted; {reaper['busy_over_target_cold']} of"
                f" the {reaper['busy_over_target']} busy probes over twice the idle p99."
            ),
            "",
        ]
    if data["profile"]:
        lines += ["## Profile of the gateway on POST /cache/new (py-spy)", "", "```"]
        lines += [*data["profile"], "```", ""]
    lines += [f"Note: {note}" for note in data["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def chart(rows: list[Row], path: Path) -> None:
    """Latency distribution (CDF, log scale) per kind and concurrency: end to end and raw."""
    import matplotlib as mpl  # noqa: PLC0415 (heavy; only when a chart is drawn)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plotted = [row for row in rows if row.kind is not None and row.measurement.latencies_s]
    levels = sorted({row.measurement.concurrency for row in plotted})
    kinds = sorted({row.kind for row in plotted if row.kind is not None})
    palette = plt.get_cmap("tab10")
    colours = {kind: palette(i) for i, kind in enumerate(kinds)}
    figure, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 4.8), squeeze=False)
    for axis, level in zip(axes[0], levels, strict=True):
        for row in rows:
            m = row.measurement
            if m.concurrency != level or row.kind is None or not m.latencies_s:
                continue
            ordered = sorted(1000 * s for s in m.latencies_s)
            points = [i / (len(ordered) - 1 or 1) for i in range(len(ordered))]
            raw = row.group.startswith("raw")
            axis.plot(
                ordered,
                points,
                color=colours[row.kind],
                linestyle="--" if raw else "-",
                linewidth=1.0 if raw else 1.6,
                label=f"{row.kind} {'driver' if raw else 'HTTP'}{_variant(row.group)}",
            )
        axis.set_xscale("log")
        axis.set_title(f"c = {level}")
        axis.set_xlabel("latency (ms, log scale)")
        axis.set_ylabel("fraction of calls at most this fast")
        axis.grid(visible=True, which="both", alpha=0.3)
        axis.axhline(0.5, color="grey", linewidth=0.5)
        axis.axhline(0.99, color="grey", linewidth=0.5)
    axes[0][0].legend(fontsize="x-small", loc="lower right")
    figure.suptitle(
        "Provisioning latency per kind: POST /<kind>/new (solid), driver create (dashed)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _variant(group: str) -> str:
    """`` (pool)`` of ``end to end (pool)``: which path of a kind a row measured."""
    return group.removeprefix("end to end").removeprefix("raw create")
