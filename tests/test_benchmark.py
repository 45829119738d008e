"""metarl bench: the report's keys and consistency, and its argument errors (no timing assertions)."""

import json

import pytest

from metarl.cli import main


@pytest.mark.parametrize("method", ["maml", "oracle"])  # the oracle's policy also observes the task, in gym too
def test_bench_json_reports_every_figure(capsys, method):
    args = ["bench", "--env", "navigation2d", "--repeats", "1", "--json",
            "--set", "meta_batch_size=2", "--set", "episodes_per_task=2", "--set", "hidden_sizes=[8]",
            "--set", "cg_iters=2", "--set", "num_threads=1", "--set", f"method={method}"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env"] == "metarl/Navigation2D-v0" and result["num_envs"] == 4
    for key in ("physics_steps_per_s", "sampler_steps_per_s", "gym_sync_steps_per_s", "sampling_s", "update_s",
                "peak_rss_mb"):
        assert result[key] > 0, key


def test_bench_unknown_experiment_is_a_one_line_error(capsys):
    assert main(["bench", "--env", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown experiment 'nope'") and "halfcheetah_vel" in err and "\n" not in err
    assert "sinusoid_maml" not in err and "omniglot_maml" not in err  # supervised configs are not benchmarked


def test_bench_without_repeats_is_a_one_line_error(capsys):
    assert main(["bench", "--env", "navigation2d", "--repeats", "0"]) == 2  # was a traceback from min() of nothing
    assert capsys.readouterr().err == "error: --repeats must be >= 1, got 0\n"
