"""How good is the TRPO step direction when the Fisher-vector products use a fraction of the tasks?

    python experiments/fisher_subsample.py experiments/results/navigation2d/maml
    python experiments/fisher_subsample.py experiments/results/halfcheetah_vel/maml --fractions 1,0.5,0.25

Draws the batch the run would train on at its next iteration (the same seeds as ``metarl train
--resume``), computes the meta-gradient g and, for each fraction, the conjugate-gradient direction x
with the metric on that fraction of the tasks (``fisher_subsample``). Each direction is scored under
the full metric H (the Hessian of the mean KL over every task):

- ``quality``: g.x / sqrt(x^T H x), the first-order surrogate gain of a step of unit KL along x,
  as a share of the full metric's (1 = as good as the full metric);
- ``kl_ratio``: the KL the subsampled metric predicts for the step over the KL the full metric
  predicts (below 1: the step comes out too long and the line search has to shorten it);
- ``cg_s``: seconds of the conjugate-gradient iterations (the config's ``cg_iters``, 10 in the paper configs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout, installed or not

import torch  # noqa: E402

from metarl.cli import keep_freed_memory  # noqa: E402
from metarl.errors import UserError  # noqa: E402
from metarl.maml_trpo import subsample_tasks  # noqa: E402
from metarl.training import load_run, make_env, make_learner, make_policy, sample_meta_batch  # noqa: E402
from metarl.trpo import conjugate_gradient, flatten  # noqa: E402


def compare_fractions(run_dir: str, fractions: list[float]) -> dict:
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad or not fractions:
        raise UserError(f"--fractions: each fraction must be in (0, 1], got {bad[0] if bad else 'none'}")
    config, state = load_run(run_dir)
    torch.set_num_threads(config.num_threads)
    env = make_env(config, config.meta_batch_size, config.episodes_per_task)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)
    params, iteration = state["params"], int(state["iteration"])
    train, valid, lrs, curvatures = sample_meta_batch(config, env, policy, learner, params, iteration)
    env.close()

    full = learner.linearize(params, train, valid, lrs, curvatures=curvatures)
    scored = learner.scored_episodes(train, valid, full.stages)
    surrogate = lambda dists: learner.surrogate_and_kl_stages(dists, full.dists, scored, full.weights)[0]  # noqa: E731
    g = flatten(full.vjp(torch.func.grad(surrogate)(full.dists)))
    full_metric = learner.fisher_vector_product(full, [e.mask for e in scored], params)

    def row(fraction: float) -> dict:
        sub_valid = subsample_tasks(valid, fraction)
        if sub_valid is valid:  # every task: the full metric itself
            metric = full_metric
        else:
            # as the update builds it: the full batch's passes restricted to the first tasks
            metric = learner.fisher_vector_product(full.first_tasks(sub_valid.num_tasks),
                                                   [e.mask[: sub_valid.num_tasks] for e in scored], params)
        start = time.perf_counter()
        x, hx = conjugate_gradient(metric, g, learner.cg_iters)
        cg_s = time.perf_counter() - start
        true_curvature = x.dot(full_metric(x)).item()
        return {"fraction": fraction, "tasks": sub_valid.num_tasks, "gain": g.dot(x).item() / true_curvature**0.5,
                "kl_ratio": x.dot(hx).item() / true_curvature, "cg_s": cg_s}

    rows = [row(f) for f in fractions]
    reference = next((r["gain"] for r in rows if r["tasks"] == valid.num_tasks), None)
    if reference is None:  # the full metric's direction is the yardstick even when not asked for
        reference = row(1.0)["gain"]
    for r in rows:
        r["quality"] = r.pop("gain") / reference
    return {"run": str(run_dir), "env": config.env, "iteration": iteration, "tasks": valid.num_tasks, "rows": rows}


def _fractions(text: str) -> list[float]:
    try:
        return [float(f) for f in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a metarl train run directory (or a paper row's directory)")
    parser.add_argument("--fractions", type=_fractions, default=[1.0, 0.5, 0.25],
                        help="comma-separated fisher_subsample values (default 1,0.5,0.25)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        result = compare_fractions(args.run_dir, args.fractions)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['env']} at iteration {result['iteration']} ({result['tasks']} tasks)")
    print(f"{'fraction':>8}  {'tasks':>5}  {'quality':>7}  {'kl_ratio':>8}  {'cg_s':>6}")
    for r in result["rows"]:
        print(f"{r['fraction']:>8g}  {r['tasks']:>5}  {r['quality']:>7.3f}  {r['kl_ratio']:>8.3f}  {r['cg_s']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
