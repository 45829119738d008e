"""machine.jsonl: one line per start or resume, the lines of replaced iterations dropped."""

import json
from pathlib import Path

import pytest

from metarl.provenance import MACHINE, record_machine


def starts(run_dir):
    return [(row["from_iteration"], row["num_threads"])
            for row in map(json.loads, (run_dir / MACHINE).read_text().splitlines())]


def test_a_resume_replaces_the_lines_of_the_iterations_it_redoes_and_a_new_run_starts_afresh(tmp_path):
    earlier = {"from_iteration": 0, "num_threads": 2, "cpu": "elsewhere"}
    (tmp_path / MACHINE).write_text("\n".join([json.dumps(earlier), json.dumps({**earlier, "from_iteration": 5}),
                                               "not json", json.dumps({**earlier, "from_iteration": 9})]) + "\n")
    record_machine(tmp_path, 5, num_threads=1)  # a resume from the checkpoint after iteration 5
    assert starts(tmp_path) == [(0, 2), (5, 1)]
    rows = [json.loads(line) for line in (tmp_path / MACHINE).read_text().splitlines()]
    assert rows[0]["cpu"] == "elsewhere" and rows[1]["cpu"] and rows[1]["torch"]
    record_machine(tmp_path, 0, num_threads=2)  # a new run in the same folder
    assert starts(tmp_path) == [(0, 2)]

def test_machine_facts_name_the_cpu_from_proc_cpuinfo():
    from metarl.provenance import machine_facts

    path = Path("/proc/cpuinfo")
    if not path.exists():
        pytest.skip("no /proc/cpuinfo")
    first = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in first:
            first[key.strip()] = value.strip()
    if "model name" not in first:
        pytest.skip("this CPU has no model name")
    facts = machine_facts()
    assert facts["cpu"] == first["model name"]
    assert facts["cpu_vendor_family_model"] == [first.get("vendor_id"), first.get("cpu family"), first.get("model")]
    assert json.loads(json.dumps(facts)) == facts  # one JSON line
