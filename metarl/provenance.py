"""Where a run was trained: the CPU and library versions, one line per start or resume in ``machine.jsonl``.

Besides the code, config and seed, the CPU decides a run's float rounding: MKL and ATen choose their
kernels by it, so the same seed trained on two kinds of CPU follows two trajectories from the first
update on. The record lets a user tell a changed result from a changed machine.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from metarl.checkpoint import drop_log_rows_after

MACHINE = "machine.jsonl"


def machine_facts() -> dict[str, Any]:
    """The CPU (model name; vendor, family and model numbers; the kernel set ATen dispatches to) and the
    versions of Python and the numeric libraries (None where one is not installed)."""
    cpu: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "model name", "cpu family", "model") and key not in cpu:
                cpu[key] = value.strip()
    except OSError:  # not Linux
        pass
    versions: dict[str, str | None] = {}
    for package in ("torch", "numpy", "mujoco", "gymnasium"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu.get("model name") or platform.processor() or platform.machine(),
            "cpu_vendor_family_model": [cpu.get("vendor_id"), cpu.get("cpu family"), cpu.get("model")],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), **versions}


def record_machine(run_dir: Path, from_iteration: int, num_threads: int) -> None:
    """Append this machine's line to ``run_dir/machine.jsonl`` for a stretch starting after
    ``from_iteration`` completed iterations (0: a new run, whose file starts afresh); lines of an earlier
    start at or after that iteration, whose iterations the resume replaces, are dropped."""
    path = run_dir / MACHINE
    drop_log_rows_after(path, from_iteration - 1, key="from_iteration")  # a new run (0) drops every line
    with open(path, "a") as record:
        record.write(json.dumps({"from_iteration": from_iteration, "num_threads": num_threads, **machine_facts()}) + "\n")
