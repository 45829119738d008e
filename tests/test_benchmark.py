"""metarl bench: the report's keys and consistency, and its argument errors (no timing assertions)."""

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

import metarl
from metarl.cli import main
from metarl.config import load_config
from metarl.training import TrainConfig

ROOT = Path(metarl.__file__).resolve().parents[1]


def tiny():
    return load_config(TrainConfig, None, ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2",
                                           "hidden_sizes=[8]", "num_threads=1", "cg_iters=3"])


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

def test_bench_figures_are_best_rates_and_medians_after_the_warm_up(monkeypatch):
    import metarl.benchmark as benchmark

    clock = {"t": 0.0}
    sampler_durations = iter([3.0, 1.0, 2.0])
    iteration_times = iter([(100.0, 200.0), (1.0, 1.0), (5.0, 9.0), (2.0, 2.0)])  # first: the warm-up

    def fake_sample(*args, **kwargs):
        clock["t"] += next(sampler_durations)

    def fake_iteration(config, env, policy, learner, params, it):
        sampling, update = next(iteration_times)
        return params, {"sampling_s": sampling, "update_s": update}

    monkeypatch.setattr(benchmark, "time", SimpleNamespace(perf_counter=lambda: clock["t"]))
    monkeypatch.setattr(benchmark, "sample_episodes", fake_sample)
    monkeypatch.setattr(benchmark, "meta_iteration", fake_iteration)
    monkeypatch.setattr(benchmark, "measure_env_rates", lambda *a, **k: {"batched_step": 123.0})
    monkeypatch.setattr(benchmark, "_gym_sync_seconds", lambda *a, **k: 4.0)
    result = benchmark.run_benchmark(tiny(), repeats=3)
    from metarl.training import make_env

    env = make_env(tiny(), 2, 2)
    steps = 4 * env.max_episode_steps  # 2 tasks x 2 episodes
    env.close()
    assert result["sampler_steps_per_s"] == pytest.approx(steps / 1.0)  # the best of the three
    assert result["gym_sync_steps_per_s"] == pytest.approx(steps / 4.0)
    assert result["physics_steps_per_s"] == 123.0
    assert result["sampling_s"] == pytest.approx(statistics.median([1.0, 5.0, 2.0]))
    assert result["update_s"] == pytest.approx(statistics.median([1.0, 9.0, 2.0]))


def test_bench_report_ratios_read_as_labelled():
    from metarl.benchmark import format_report

    report = format_report({"env": "e", "num_envs": 4, "physics_steps_per_s": 100.0, "sampler_steps_per_s": 250.0,
                            "gym_sync_steps_per_s": 50.0, "sampling_s": 1.0, "update_s": 2.0, "peak_rss_mb": 10.0})
    lines = {line.split("  ")[1].strip(): line.split()[-1] for line in report.splitlines() if "/" in line}
    assert float(lines["sampler / physics"]) == pytest.approx(2.5)
    assert float(lines["sampler / gym sync"]) == pytest.approx(5.0)


def test_bench_takes_a_toml_path_as_it_is(tmp_path):
    from metarl.benchmark import config_path

    path = tmp_path / "mine.toml"
    path.write_text('env = "metarl/Navigation2D-v0"\n')
    assert config_path(str(path)) == path
    assert config_path("navigation2d") == ROOT / "experiments" / "navigation2d.toml"
