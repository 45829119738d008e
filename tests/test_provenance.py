"""machine.jsonl: one line per start or resume, the lines of replaced iterations dropped."""

import json

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
