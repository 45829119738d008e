"""The env benchmark runs whole episodes of both measurements and reports positive rates."""

import pytest

from envs.benchmark import main, measure


def test_measure_locomotion_reports_raw_and_full_rates():
    rates = measure("metarl/HalfCheetahDir-v0", num_envs=2, num_threads=0, repeats=1)
    assert set(rates) == {"raw_physics", "batched_step"}
    assert all(rate > 0 for rate in rates.values())


def test_measure_navigation_has_no_raw_physics():
    assert set(measure("metarl/Navigation2D-v0", num_envs=3, num_threads=0, repeats=1)) == {"batched_step"}


def test_cli_prints_rates_and_rejects_bad_sizes(capsys):
    main(["--env", "metarl/AntVel-v0", "--num-envs", "2", "--threads", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "raw_physics" in out and "batched_step / raw_physics" in out
    with pytest.raises(SystemExit) as info:
        main(["--num-envs", "0"])
    assert info.value.code == 2
