"""Evaluation batches counted in environment steps (the paper's test rule) and the means over them."""

import json
import math
import warnings

import pytest
import torch

import envs
from metarl.cli import main
from metarl.config import load_config
from metarl.episodes import Episodes
from metarl.evaluation import adaptation_rollouts, evaluate_run, pool_results
from metarl.maml_trpo import MAMLTRPO
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import sample_episodes, sample_step_counted
from metarl.seeding import EVALUATE, derive_seed
from metarl.stats import mean_ci95
from metarl.training import TrainConfig, broadcast, load_run, make_env, make_learner, make_policy, train

ENV_ID = "metarl/Navigation2D-v0"
# a goal at the start ends every episode after one step when the point cannot move; a far one never ends
NEAR, FAR = {"goal": (0.0, 0.0)}, {"goal": (0.5, 0.5)}


def still_policy(num_tasks):
    """A policy whose mean is 0 and whose noise is negligible: the point stays at the origin."""
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    params = {k: torch.zeros_like(v) for k, v in policy.init_params().items()}
    params["log_std"] = torch.full((2,), -30.0)
    return policy, broadcast(params, num_tasks)


def test_step_counted_batch_collects_whole_episodes_until_the_count():
    policy, params = still_policy(2)
    env = envs.make_batched(ENV_ID, 2 * 2)
    batch = sample_step_counted(env, policy, params, [NEAR, FAR], episodes=2, batch_steps=5, seed=3)
    # NEAR: one-step episodes, so 5 of them, in 3 rounds of 2; FAR: one 100-step episode reaches 5 at once;
    # the sixth episode, which no task collected, is dropped
    assert batch.episodes_per_task == 5
    collected = batch.collected()
    assert collected.tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert batch.mask[0].sum().item() == 5 and batch.mask[1].sum().item() == 100
    # round 0 is the plain sampler's batch with the same seed
    plain = sample_episodes(env, policy, params, [NEAR, FAR], 2, seed=3)
    torch.testing.assert_close(batch.observations[:, :, :2], plain.observations)
    torch.testing.assert_close(batch.rewards[1, :, :1], plain.rewards[1, :, :1])


def test_step_counted_batch_stops_at_the_first_episode_that_reaches_the_count():
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    params = broadcast(policy.init_params(torch.Generator().manual_seed(0)), 3)
    tasks = [{"goal": (0.05, 0.0)}, {"goal": (-0.02, 0.03)}, FAR]
    env = envs.make_batched(ENV_ID, 3 * 4)
    batch = sample_step_counted(env, policy, params, tasks, episodes=4, batch_steps=250, seed=1)
    lengths = batch.mask.sum(1)  # [tasks, E], 0 for episodes not collected
    for task_lengths in lengths:
        taken = task_lengths[task_lengths > 0]
        n = len(taken)
        assert bool((task_lengths[:n] > 0).all()) and bool((task_lengths[n:] == 0).all())  # a prefix
        assert taken.sum() >= 250 > taken[:-1].sum()  # the last one collected was started below the count


def test_mean_return_averages_only_the_collected_episodes():
    mask = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # [1 task, T=2, E=3]: the third never ran
    rewards = torch.tensor([[[-1.0, -4.0, 0.0], [-2.0, 0.0, 0.0]]])
    batch = Episodes(observations=torch.zeros(1, 2, 3, 2), actions=torch.zeros(1, 2, 3, 2), rewards=rewards, mask=mask)
    assert batch.mean_return().tolist() == [-3.5]  # (-3 + -4) / 2, not / 3


def test_inner_step_ignores_the_episodes_not_collected():
    policy, _ = still_policy(1)
    params = broadcast(policy.init_params(torch.Generator().manual_seed(2)), 2)
    learner = MAMLTRPO(policy, inner_lr=0.5)
    env = envs.make_batched(ENV_ID, 2 * 3)
    batch = sample_step_counted(env, policy, params, [{"goal": (0.1, -0.1)}, FAR], episodes=3, batch_steps=150, seed=0)
    collected = batch.collected()
    assert 0 < collected[1].sum() < batch.episodes_per_task  # some episodes of the far goal are left out
    adapted = learner.inner_step(params, learner.process(batch), 0.5, first_order=True)
    # the far goal's step from its collected episodes alone
    n = int(collected[1].sum())
    alone = batch.select(tasks=slice(1, 2), episodes=slice(0, n))
    one = {k: v[1:2] for k, v in params.items()}
    expected = learner.inner_step(one, learner.process(alone), 0.5, first_order=True)
    for k in expected:
        torch.testing.assert_close(adapted[k][1:2], expected[k], rtol=1e-4, atol=1e-6)


def test_the_inner_step_by_task_groups_equals_one_step_on_the_whole_batch(monkeypatch):
    """Evaluation steps a step-counted batch a few tasks at a time, each group cut to the episodes its
    tasks collected (memory); each task's step is still its step on its own episodes."""
    import metarl.evaluation

    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    tasks = [{"goal": (0.02, 0.0)}, FAR, {"goal": (0.1, -0.1)}, {"goal": (0.0, -0.03)}, FAR]
    params = broadcast(policy.init_params(torch.Generator().manual_seed(4)), len(tasks))
    env = envs.make_batched(ENV_ID, len(tasks) * 3)
    batch = sample_step_counted(env, policy, params, tasks, episodes=3, batch_steps=150, seed=2)
    learner = MAMLTRPO(policy, inner_lr=0.5)
    whole = learner.inner_step(params, learner.process(batch), 0.5, first_order=True)
    monkeypatch.setattr(metarl.evaluation, "TASK_GROUP", 2)
    widths = batch.collected().sum(1)
    assert widths[:2].max() < batch.episodes_per_task or widths[2:4].max() < batch.episodes_per_task  # some group is cut
    grouped = metarl.evaluation.step_by_task_groups(learner, params, batch, 0.5)
    for k in whole:
        torch.testing.assert_close(grouped[k], whole[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(grouped[k], params[k]) for k in whole)  # it stepped
    # groups split further by their padded width: one task per group here
    monkeypatch.setattr(metarl.evaluation, "GROUP_COLUMNS", int(widths.min()))
    assert len(metarl.evaluation.task_groups(widths)) == len(tasks)
    alone = metarl.evaluation.step_by_task_groups(learner, params, batch, 0.5)
    for k in whole:
        torch.testing.assert_close(alone[k], whole[k], rtol=1e-5, atol=1e-6)


def test_task_groups_bound_the_tasks_and_the_padded_columns_of_each_group(monkeypatch):
    import metarl.evaluation

    monkeypatch.setattr(metarl.evaluation, "TASK_GROUP", 4)
    monkeypatch.setattr(metarl.evaluation, "GROUP_COLUMNS", 12)
    collected = torch.tensor([3, 3, 3, 3, 3, 2, 1, 20, 2, 2, 1])
    groups = metarl.evaluation.task_groups(collected)
    assert groups == [slice(0, 4), slice(4, 6), slice(6, 7), slice(7, 8), slice(8, 11)]
    for g in groups:
        assert g.stop - g.start <= 4 and ((g.stop - g.start) * int(collected[g].max()) <= 12 or g.stop - g.start == 1)
    # with the defaults, 200 tasks up to 200 episodes wide stay one group; 201 wide, two
    monkeypatch.undo()
    assert metarl.evaluation.task_groups(torch.full((200,), 200)) == [slice(0, 200)]
    assert metarl.evaluation.task_groups(torch.full((200,), 201)) == [slice(0, 100), slice(100, 200)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    values = ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]",
              "inner_lr=0.5", "num_threads=1", "cg_iters=3", "iterations=1"]
    return train(load_config(TrainConfig, None, values), tmp_path_factory.mktemp("run") / "maml", progress=False)


def test_evaluate_with_a_one_step_batch_scores_each_tasks_first_episode(run, capsys):
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--episodes", "2", "--batch-steps", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch_steps"] == 1 and result["episodes_collected"] == [1.0, 1.0]
    # before adaptation: the first of the two episodes the fixed protocol samples with the same seed
    config, state = load_run(run)
    tasks = envs.sample_tasks(config.env, 3, seed=derive_seed(EVALUATE, 0, 0))
    env = make_env(config, 3, 2)
    policy = make_policy(config, env)
    first, _ = next(adaptation_rollouts(env, policy, make_learner(config, policy), state["params"], tasks, [0.5], 2, 0))
    # summed over the same [T, 1] layout as the step-counted batch's (float32 sums over [T, 2] round differently)
    only_first = first.select(episodes=slice(0, 1))
    assert result["returns"][0] == pytest.approx(float(only_first.undiscounted_returns()[:, 0].double().mean()), rel=1e-9)
    # the default protocol is unchanged and reports no batch_steps
    plain = evaluate_run(run, num_tasks=3, steps=1, episodes=2)
    assert "batch_steps" not in plain and math.isfinite(plain["returns"][1])


@pytest.mark.parametrize("args, message", [
    (["--batch-steps", "0"], "--batch-steps"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),  # was a numpy traceback from the seed hashing
])
def test_bad_evaluate_options_are_one_line_errors(run, capsys, args, message):
    assert main(["evaluate", str(run), "--tasks", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_evaluation_keeps_each_tasks_returns_and_their_mean_is_the_headline(run):
    result = evaluate_run(run, num_tasks=4, steps=2, episodes=2, seed=3)
    config, _ = load_run(run)
    tasks = envs.sample_tasks(config.env, 4, seed=derive_seed(EVALUATE, 3, 0))
    assert [entry["task"] for entry in result["per_task"]] == tasks and result["seed"] == 3
    per_task = [[entry["returns"][k] for entry in result["per_task"]] for k in range(3)]
    for k in range(3):
        assert result["returns"][k] == pytest.approx(sum(per_task[k]) / 4, rel=1e-12)
    # the tasks differ, so the per-task figures are not one number copied four times
    assert len(set(per_task[1])) == 4
    json.dumps(result)  # JSON-ready as `--json` prints it


def test_several_seeds_pool_their_draws_as_one_evaluation(run, capsys):
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--episodes", "2", "--seed", "0", "2",
                 "--json"]) == 0
    pooled = json.loads(capsys.readouterr().out)
    draws = [evaluate_run(run, num_tasks=3, steps=1, episodes=2, seed=s) for s in (0, 2)]
    assert pooled["tasks"] == 6 and pooled["seeds"] == [0, 2] and "seed" not in pooled
    assert pooled["per_task"] == json.loads(json.dumps(draws[0]["per_task"] + draws[1]["per_task"]))
    for k in range(2):
        values = [entry["returns"][k] for entry in pooled["per_task"]]
        mean, ci = mean_ci95(values)
        assert pooled["returns"][k] == pytest.approx(mean, rel=1e-12) and pooled["ci95"][k] == pytest.approx(ci)
        # the same figure from the draws' summaries alone (the README's rule for pooling evaluation JSONs):
        # within-draw sums of squares from each half-width, plus the spread of the draws' means
        means = [d["returns"][k] for d in draws]
        within = sum((d["ci95"][k] * math.sqrt(3) / 1.96) ** 2 * 2 for d in draws)
        between = sum(3 * (m - mean) ** 2 for m in means)
        assert 1.96 * math.sqrt((within + between) / 5) / math.sqrt(6) == pytest.approx(ci, rel=1e-9)
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--episodes", "2", "--seed", "0", "2"]) == 0
    assert "6 held-out tasks (evaluation seeds 0, 2)" in capsys.readouterr().out


def test_pooling_refuses_draws_under_different_protocols_and_a_repeated_seed(run, capsys):
    one = evaluate_run(run, num_tasks=2, steps=1, episodes=2, seed=0)
    other = evaluate_run(run, num_tasks=2, steps=1, episodes=3, seed=1)
    with pytest.raises(ValueError, match="one protocol"):
        pool_results([one, other])
    assert main(["evaluate", str(run), "--tasks", "2", "--seed", "1", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--seed" in err and "\n" not in err


def test_pooled_step_counted_draws_average_their_episode_counts_by_task(run):
    draws = [evaluate_run(run, num_tasks=n, steps=1, episodes=2, seed=s, batch_steps=150) for n, s in ((2, 0), (4, 1))]
    pooled = pool_results(draws)
    assert pooled["batch_steps"] == 150 and pooled["tasks"] == 6
    for k in range(2):
        expected = (2 * draws[0]["episodes_collected"][k] + 4 * draws[1]["episodes_collected"][k]) / 6
        assert pooled["episodes_collected"][k] == pytest.approx(expected, rel=1e-12)


def test_mean_ci95_known_values_and_diverged_values_without_warnings():
    assert mean_ci95([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.96 / math.sqrt(3)), rel=1e-12)
    assert mean_ci95([4.0]) == (4.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a diverged adaptation (sinusoid MSE overflows) must not warn
        mean, ci = mean_ci95([1.0, math.inf, 2.0])
        assert mean == math.inf and math.isnan(ci)
        assert all(math.isnan(v) for v in mean_ci95([1.0, math.nan]))


def test_each_adaptation_step_uses_its_own_rate_from_the_previous_steps_parameters():
    """An independent rollout of the protocol: sample, step at lrs[k], sample ..., with the evaluation's
    seeds; the step sizes differ, so a protocol that used the first for every step would not match."""
    config = load_config(TrainConfig, None, [f'env="{ENV_ID}"', "hidden_sizes=[8]", "num_threads=1"])
    env = make_env(config, 2, 3)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)
    params = policy.init_params(torch.Generator().manual_seed(4))
    tasks = envs.sample_tasks(ENV_ID, 2, seed=5)
    lrs = [0.5, 0.05]
    got = [batch.mean_return() for batch, _ in adaptation_rollouts(env, policy, learner, params, tasks, lrs, 3, seed=7)]
    task_params, expected = broadcast(params, 2), []
    for k in range(3):
        batch = sample_episodes(env, policy, task_params, tasks, 3, seed=derive_seed(EVALUATE, 7, k + 1))
        expected.append(batch.mean_return())
        if k < 2:
            task_params = {n: v.detach() for n, v in learner.inner_step(task_params, learner.process(batch), lrs[k],
                                                                        first_order=True).items()}
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    same_rate = [batch.mean_return() for batch, _ in adaptation_rollouts(env, policy, learner, params, tasks, [0.5, 0.5], 3, seed=7)]
    assert not torch.allclose(same_rate[2], got[2])
    env.close()


def test_pooled_episode_counts_are_weighted_by_each_draws_tasks():
    base = {"env": "e", "episodes_per_step": 2, "batch_steps": 10, "returns": [0, 0], "ci95": [0, 0]}
    a = {**base, "tasks": 2, "seed": 0, "episodes_collected": [1.0, 3.0],
         "per_task": [{"task": {}, "returns": [0.0, 1.0]}] * 2}
    b = {**base, "tasks": 4, "seed": 1, "episodes_collected": [4.0, 6.0],
         "per_task": [{"task": {}, "returns": [2.0, 3.0]}] * 4}
    assert pool_results([a, b])["episodes_collected"] == pytest.approx([3.0, 5.0])


def test_episodes_collected_is_the_mean_over_tasks_and_zero_steps_scores_the_initialization(run, monkeypatch):
    import numpy as np

    import metarl.evaluation

    unadapted = evaluate_run(run, num_tasks=2, steps=0, episodes=2)
    assert unadapted["step_sizes"] == [] and len(unadapted["returns"]) == 1
    counts = np.array([[1.0, 3.0], [2.0, 2.0]])  # [steps + 1, tasks]
    monkeypatch.setattr(metarl.evaluation, "adaptation_curve", lambda *a, **k: (np.zeros((2, 2)), counts))
    assert evaluate_run(run, num_tasks=2, steps=1, episodes=2, batch_steps=10)["episodes_collected"] == [2.0, 2.0]
