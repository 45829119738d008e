"""metarl compare: same held-out tasks for every run, baselines' step sizes from validation tasks, errors, plot."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import envs
from metarl.cli import main
from metarl.compare import compare_runs
from metarl.config import load_config
from metarl.evaluation import adaptation_returns, evaluate_run, pool_results
from metarl.seeding import EVALUATE, VALIDATE, derive_seed
from metarl.training import TrainConfig, load_run, train

TINY = ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]",
        "inner_lr=0.5", "checkpoint_every=1", "num_threads=1", "cg_iters=3", "iterations=1"]
SMALL = dict(num_tasks=3, steps=2, episodes=2, val_tasks=2)


def tiny_run(path, *extra):
    return train(load_config(TrainConfig, None, TINY + list(extra)), path, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {m: tiny_run(root / m, f"method={m}") for m in ("maml", "pretrained", "oracle", "random")}
    runs["cheetah"] = tiny_run(root / "cheetah", "method=random", "env=\"metarl/HalfCheetahVel-v0\"")
    return runs


def test_maml_entry_equals_an_independent_evaluation(runs):
    result = compare_runs([runs["maml"], runs["random"]], **SMALL)
    maml = result["methods"]["maml"]
    alone = evaluate_run(runs["maml"], num_tasks=3, steps=2, episodes=2)
    assert maml["returns"] == alone["returns"] and maml["ci95"] == alone["ci95"]
    assert maml["per_task"] == alone["per_task"]  # each task's own curve, as evaluate gives it
    assert maml["step_sizes"] == [0.5, 0.25] and "validation" not in maml


def test_every_method_lists_the_same_tasks_with_their_own_returns(runs):
    result = compare_runs([runs["maml"], runs["random"], runs["oracle"]], **SMALL)
    held_out = envs.sample_tasks("metarl/Navigation2D-v0", 3, seed=derive_seed(EVALUATE, 0, 0))
    for entry in result["methods"].values():
        assert [t["task"] for t in entry["per_task"]] == held_out
        per_task = np.array([t["returns"] for t in entry["per_task"]])  # [tasks, steps + 1]
        assert per_task.shape == (3, 3)
        np.testing.assert_allclose(per_task.mean(axis=0), entry["returns"], rtol=1e-12)
    oracle = np.array([t["returns"] for t in result["methods"]["oracle"]["per_task"]])
    assert np.all(oracle == oracle[:, :1])  # not adapted: one return per task, after every number of steps
    maml, random = (np.array([t["returns"] for t in result["methods"][m]["per_task"]]) for m in ("maml", "random"))
    assert not np.array_equal(maml, random)


def test_baseline_adapts_on_the_same_tasks_with_its_validated_step_size(runs):
    result = compare_runs([runs["maml"], runs["random"]], **SMALL)
    entry = result["methods"]["random"]
    scores = entry["validation"]
    assert sorted(float(k) for k in scores) == [0.125, 0.25, 0.5, 1.0, 2.0]  # the grid around inner_lr 0.5
    best = float(max(scores, key=scores.get))
    assert entry["step_sizes"] == [best, best]
    # the validation scores come from validation tasks, not the held-out ones
    config, state = load_run(runs["random"])
    val_tasks = envs.sample_tasks(config.env, 2, seed=derive_seed(VALIDATE, 0, 0))
    held_out = envs.sample_tasks(config.env, 3, seed=derive_seed(EVALUATE, 0, 0))
    assert not any(t in held_out for t in val_tasks)
    redone = adaptation_returns(config, state["params"], val_tasks, [best, best], 2, derive_seed(VALIDATE, 0, 1))
    assert scores[f"{best:g}"] == pytest.approx(float(redone[-1].mean()), rel=1e-12)
    # the reported curve is the held-out tasks' curve at that step size
    curve = adaptation_returns(config, state["params"], held_out, [best, best], 2, 0)
    assert entry["returns"] == pytest.approx(curve.mean(axis=1).tolist(), rel=1e-12)


def test_all_four_methods_on_one_table(runs, tmp_path, capsys):
    order = ["maml", "pretrained", "oracle", "random"]
    plot = tmp_path / "figure5.svg"
    assert main(["compare", *[str(runs[m]) for m in order], "--tasks", "2", "--steps", "1", "--episodes", "1",
                 "--val-tasks", "1", "--json", "--plot", str(plot)]) == 0
    methods = json.loads(capsys.readouterr().out)["methods"]
    assert list(methods) == order and [m["method"] for m in methods.values()] == order
    assert [("validation" in m) for m in methods.values()] == [False, True, False, True]
    # the oracle observes the task and is not adapted: one value at every step
    oracle = methods["oracle"]
    assert oracle["step_sizes"] == [] and oracle["returns"][0] == oracle["returns"][1]
    assert methods["pretrained"]["iteration"] == methods["oracle"]["iteration"] == 1
    assert plot.read_text().lstrip().startswith("<?xml") and "oracle" in plot.read_text()
    # the oracle policy sees the goal: its curve is not another method's
    assert methods["oracle"]["returns"] != methods["pretrained"]["returns"]


def test_json_names_runs_by_method_and_directory_when_methods_repeat(runs, tmp_path, capsys):
    twin = shutil.copytree(runs["maml"], tmp_path / "twin")
    code = main(["compare", str(runs["maml"]), str(twin), str(runs["random"]), "--tasks", "2", "--steps", "1",
                 "--episodes", "1", "--val-tasks", "1", "--json"])
    assert code == 0
    methods = json.loads(capsys.readouterr().out)["methods"]
    assert list(methods) == ["maml (maml)", "maml (twin)", "random"]
    for m in methods.values():
        assert len(m["returns"]) == len(m["ci95"]) == 2
    # a copy of the same run on the same tasks and seeds gives the same numbers
    assert methods["maml (maml)"]["returns"] == methods["maml (twin)"]["returns"]


def test_table_and_plot(runs, tmp_path, capsys):
    plot = tmp_path / "figs" / "figure5.png"
    assert main(["compare", str(runs["maml"]), str(runs["random"]), "--tasks", "2", "--steps", "1",
                 "--episodes", "1", "--val-tasks", "1", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "0 steps" in out and "1 step" in out and "(validated)" in out
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300
        assert np.asarray(image.convert("L")).std() > 0  # not a blank canvas


def test_several_seeds_pool_draws_as_evaluate_does(runs, capsys):
    result = compare_runs([runs["maml"], runs["random"]], seed=[0, 3], **SMALL)
    assert result["seeds"] == [0, 3] and "seed" not in result and result["tasks"] == 6
    maml = result["methods"]["maml"]
    pooled = pool_results([evaluate_run(runs["maml"], num_tasks=3, steps=2, episodes=2, seed=s) for s in (0, 3)])
    assert maml["returns"] == pooled["returns"] and maml["ci95"] == pooled["ci95"]
    assert maml["per_task"] == pooled["per_task"]
    # the baseline's step size is the one the first seed's validation tasks pick, used on every draw
    random = result["methods"]["random"]
    alone = compare_runs([runs["random"]], seed=0, **SMALL)["methods"]["random"]
    assert random["step_sizes"] == alone["step_sizes"] and random["validation"] == alone["validation"]
    assert random["per_task"][:3] == alone["per_task"]
    lr = random["step_sizes"][0]
    config, state = load_run(runs["random"])
    draw = envs.sample_tasks(config.env, 3, seed=derive_seed(EVALUATE, 3, 0))
    curve = adaptation_returns(config, state["params"], draw, [lr, lr], 2, 3)
    assert [t["returns"] for t in random["per_task"][3:]] == curve.T.tolist()
    assert main(["compare", str(runs["maml"]), "--tasks", "2", "--steps", "1", "--episodes", "1", "--seed", "0", "2"]) == 0
    captured = capsys.readouterr()
    assert "4 held-out tasks (evaluation seeds 0, 2)" in captured.out
    assert "maml: adapting on 2 draws of 2 tasks" in captured.err  # the progress line counts the draws too


@pytest.mark.parametrize("case, message", [
    ("missing", "run directory not found"),
    ("mismatch", "runs do not share an environment"),
    ("plot", "--plot"),
    ("twice", "run directory given twice"),
    ("row", "run directory given twice"),  # a paper row's folder stands for its maml run
    ("folder", "a folder of that name exists"),
    ("seed", "--seed lists a seed twice (1 1)"),
    ("negative", "--seed must be >= 0, got -2"),
    ("one_task", "--tasks must be at least 2 (a confidence interval needs two tasks), got 1"),
    ("no_validation", "--val-tasks must be at least 1, got 0"),
])
def test_bad_arguments_are_one_line_errors(runs, tmp_path, capsys, case, message):
    args = {"missing": [str(runs["maml"]), str(tmp_path / "nope")],
            "mismatch": [str(runs["maml"]), str(runs["cheetah"])],
            "plot": [str(runs["maml"]), "--plot", str(tmp_path / "figure.jpg")],
            "twice": [str(runs["maml"]), str(runs["maml"])],
            "row": [str(runs["maml"].parent), str(runs["maml"])],
            "folder": [str(runs["maml"]), "--plot", str(tmp_path / "folder.png")],
            "seed": [str(runs["maml"]), "--seed", "1", "1"],
            "negative": [str(runs["maml"]), "--seed", "0", "-2"],
            "one_task": [str(runs["maml"]), "--tasks", "1"],
            "no_validation": [str(runs["maml"]), "--val-tasks", "0"]}[case]
    (tmp_path / "folder.png").mkdir()
    small = [x for option, value in (("--tasks", "2"), ("--steps", "1"), ("--episodes", "1")) if option not in args
             for x in (option, value)]
    assert main(["compare", *args, *small]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert captured.out == "" and not (tmp_path / "figure.jpg").exists()


def load_experiment(name):
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_table_trains_compares_and_writes_the_markdown(tmp_path, capsys):
    paper_table = load_experiment("paper_table")
    args = ["navigation2d", "--out", str(tmp_path / "row"), "--tasks", "2",
            "--steps", "1", "--episodes", "1", "--val-tasks", "1", "--no-progress",
            *[f"--set={item}" for item in TINY if not item.startswith(("env=", "inner_lr="))]]
    assert paper_table.main(args) == 0
    table = (tmp_path / "row" / "table.md").read_text()
    result = json.loads((tmp_path / "row" / "compare.json").read_text())
    ours = result["methods"]["maml"]
    assert f"| maml (ours) | {ours['returns'][0]:.1f} ± {ours['ci95'][0]:.1f} |" in table
    assert "| maml (paper) | -40.4 | -11.7 |" in table and "| pretrained (paper) | -40.8 | -19.7 |" in table
    assert "| oracle (paper) | -2.3 | — |" in table and "| random (ours) |" in table
    assert (tmp_path / "row" / "figure5.png").stat().st_size > 0
    # a second invocation continues the finished runs instead of refusing their checkpoints
    assert paper_table.main(args) == 0
    assert json.loads((tmp_path / "row" / "compare.json").read_text())["methods"]["maml"]["returns"] == ours["returns"]
    # several evaluation seeds: the first draw's tasks keep their returns, the table says it pooled two draws
    assert paper_table.main(args + ["--seed", "0", "1"]) == 0
    pooled = json.loads((tmp_path / "row" / "compare.json").read_text())
    assert pooled["seeds"] == [0, 1] and pooled["tasks"] == 4
    assert pooled["methods"]["maml"]["per_task"][:2] == ours["per_task"]
    assert "4 held-out tasks (evaluation seeds 0, 1: 2 draws of 2 pooled)" in (tmp_path / "row" / "table.md").read_text()
    assert "| maml | `" in table and "` | 1 | 0 |" in table  # the iterations column is the checkpoint's
    capsys.readouterr()
    # asked for fewer iterations than a run holds: refused, not compared under the smaller count
    assert paper_table.main(args + ["--set=iterations=2", "--methods", "maml"]) == 0
    two = (tmp_path / "row" / "table.md").read_text()
    assert "| maml | `" in two and "` | 2 | 0 |" in two
    capsys.readouterr()
    assert paper_table.main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'row' / 'maml'} already holds 2 iterations, more than "
                                               "the 1 asked for; give another --out (or --set iterations=2 to compare "
                                               "it as it is)")
    assert (tmp_path / "row" / "table.md").read_text() == two
    assert paper_table.main(["navigation2d", "--out", str(tmp_path / "bad"), "--methods", "maml,reptile"]) == 2
    assert capsys.readouterr().err.strip() == "error: --methods: unknown method reptile (known: maml, pretrained, oracle, random)"


def test_paper_table_says_when_its_cheetah_is_not_the_papers():
    # the gymnasium cheetah's returns (10 s episodes) sit beside the paper's rllab-cheetah numbers: say so
    paper_table = load_experiment("paper_table")
    entry = {"method": "maml", "returns": [-168.0, -114.7], "ci95": [22.3, 11.4], "step_sizes": [0.1]}
    result = {"steps": 1, "seed": 0, "tasks": 40, "episodes_per_step": 20, "validation_tasks": 10,
              "env": "metarl/HalfCheetahVel-v0", "methods": {"maml": entry}}

    def table(row):
        return paper_table.markdown(row, result, {}, 1.0, "cmd")

    assert "| maml (paper) | -129.5 | -78.6 |" in table("halfcheetah_vel")
    assert "not comparable" in table("halfcheetah_vel") and "`halfcheetah_vel_rllab`" in table("halfcheetah_vel")
    assert "runs 10 s episodes (200 steps of 0.05 s), against the paper's 2 s episodes (200 steps of 0.01 s)" in \
        table("halfcheetah_vel")
    assert "`halfcheetah_dir_rllab`" in table("halfcheetah_dir")
    assert "not comparable" not in table("halfcheetah_vel_rllab")
    assert "| maml (paper) | -129.5 | -78.6 |" in table("halfcheetah_vel_rllab")


def test_paper_table_interrupted_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    # a kill (SIGTERM, turned into KeyboardInterrupt where the run is held) ends with a message, no traceback
    paper_table = load_experiment("paper_table")

    def interrupted(args, command):
        raise KeyboardInterrupt

    monkeypatch.setattr(paper_table, "run", interrupted)
    assert paper_table.main(["navigation2d", "--out", str(tmp_path / "row")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted;") and err.count("\n") == 1


def test_fisher_subsample_experiment_scores_directions_under_the_full_metric(runs, capsys):
    fisher = load_experiment("fisher_subsample")
    result = fisher.compare_fractions(str(runs["maml"]), [1.0, 0.5])
    assert result["iteration"] == 1 and result["tasks"] == 2
    full, half = result["rows"]
    assert (full["tasks"], half["tasks"]) == (2, 1)
    assert full["quality"] == 1.0  # the full metric is the reference
    # at fraction 1 the predicted KL (from conjugate gradient's residual) is the full metric's own
    assert full["kl_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert half["quality"] > 0 and half["kl_ratio"] > 0
    # without fraction 1 in the list the full metric is still the yardstick
    alone = fisher.compare_fractions(str(runs["maml"]), [0.5])["rows"][0]
    assert alone["quality"] == pytest.approx(half["quality"], rel=1e-5)
    assert fisher.main([str(runs["maml"]), "--fractions", "0.5,2"]) == 2
    assert "must be in (0, 1], got 2.0" in capsys.readouterr().err


def test_step_counted_batches_reach_the_comparison(runs):
    result = compare_runs([runs["maml"], runs["random"]], batch_steps=150, **SMALL)
    alone = evaluate_run(runs["maml"], num_tasks=3, steps=2, episodes=2, batch_steps=150)
    assert result["batch_steps"] == 150 and result["methods"]["maml"]["returns"] == alone["returns"]
    # more than the 2 episodes of the default protocol: other returns
    assert result["methods"]["maml"]["returns"] != compare_runs([runs["maml"]], **SMALL)["methods"]["maml"]["returns"]


def test_the_oracles_per_task_returns_are_its_own_at_every_step(runs):
    result = compare_runs([runs["oracle"]], num_tasks=3, steps=2, episodes=2, val_tasks=1)["methods"]["oracle"]
    config, state = load_run(runs["oracle"])
    tasks = envs.sample_tasks(config.env, 3, seed=derive_seed(EVALUATE, 0, 0))
    own = adaptation_returns(config, state["params"], tasks, [], 2, 0)[0]
    assert [t["returns"] for t in result["per_task"]] == [[float(v)] * 3 for v in own]


def test_paper_table_training_time_sums_sampling_and_update_seconds(tmp_path):
    paper_table = load_experiment("paper_table")
    rows = [{"iteration": 1, "sampling_s": 1.5, "update_s": 2.0}, {"iteration": 2, "sampling_s": 0.25, "update_s": 4.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert paper_table.training_seconds(tmp_path) == pytest.approx(7.75)
    assert paper_table.training_seconds(tmp_path / "none") == 0.0


def test_paper_tables_runs_table_shows_the_iterations_each_checkpoint_holds(tmp_path):
    from metarl.checkpoint import save_checkpoint
    from metarl.training import CHECKPOINT

    paper_table = load_experiment("paper_table")
    run_dir = tmp_path / "random"
    run_dir.mkdir()
    save_checkpoint({"iteration": 0, "params": {}}, run_dir / CHECKPOINT)  # a random initialization: never trained
    entry = {"method": "random", "returns": [-40.0, -30.0], "ci95": [1.0, 1.0], "step_sizes": [0.1]}
    result = {"steps": 1, "seed": 0, "tasks": 4, "episodes_per_step": 2, "validation_tasks": 2,
              "env": "metarl/Navigation2D-v0", "methods": {"random": entry}}
    config = load_config(TrainConfig, None, TINY + ["method=\"random\"", "iterations=5", "seed=7"])
    runs = {"random": {"run_dir": run_dir, "config": config, "wall_s": 1.0}}
    table = paper_table.markdown("navigation2d", result, runs, 1.0, "cmd")
    assert f"| random | `{run_dir}` | 0 | 7 | 0 | 1 |" in table
