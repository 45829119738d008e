"""Config files and --set overrides: parsing, types, TOML round trips, resume comparisons, seed range."""

import tomllib

import pytest

from metarl.config import config_to_dict, dump_toml, first_difference, load_config
from metarl.errors import UserError
from metarl.supervised.config import SupervisedConfig
from metarl.training import TrainConfig


def test_booleans_are_not_numbers():
    # TOML's true is a Python bool, which is an int: it must not pass as iterations = 1 or inner_lr = 1.0
    for item, message in (("iterations=true", "expects an integer"), ("inner_lr=true", "expects a number")):
        with pytest.raises(UserError, match=message):
            load_config(TrainConfig, None, [item])


def test_set_values_may_hold_equals_signs_and_lists_keep_their_annotated_type():
    config = load_config(SupervisedConfig, None, ['task="folders"', 'train_data=["runs/a=b"]', 'test_data=["c"]'])
    assert config.train_data == ["runs/a=b"]  # split at the first "=" only
    assert load_config(TrainConfig, None, ["hidden_sizes=[8,8]"]).hidden_sizes == (8, 8)  # a tuple, as annotated


def test_written_configs_read_back_the_same_with_backslashes_and_quotes():
    config = load_config(SupervisedConfig, None, ['task="folders"', 'train_data=["C:\\\\data\\\\\\"x\\""]',
                                                  'test_data=["d"]'])
    assert config.train_data == ['C:\\data\\"x"']
    values = config_to_dict(config)
    assert tomllib.loads(dump_toml(values)) == {k: v for k, v in values.items() if v is not None}


def test_a_resume_compares_only_the_keys_both_configs_have():
    assert first_difference({"a": 1, "newer_key": 2}, {"a": 1}) is None  # a key newer than the checkpoint
    assert first_difference({"a": 1, "b": 2}, {"a": 1, "b": 3}) == "b"


def test_the_largest_documented_seed_is_accepted():
    assert load_config(TrainConfig, None, ["seed=18446744073709551615"]).seed == 2**64 - 1
    with pytest.raises(UserError, match=r"must be in \[0, 2\*\*64 - 1\]"):
        load_config(TrainConfig, None, ["seed=18446744073709551616"])
