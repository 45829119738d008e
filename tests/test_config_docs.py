"""docs/config.md lists every config key with its current default."""

import re
from pathlib import Path

import pytest

from metarl.config import config_to_dict, dump_toml
from metarl.supervised.config import SupervisedConfig
from metarl.training import TrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def documented_defaults(section: str) -> dict[str, str]:
    """``{key: default cell}`` of the table under the heading starting with ``section``."""
    text = DOC.read_text().split("\n## ")
    (body,) = [part for part in text if part.startswith(section)]
    rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| `")]
    return {cells[0].strip("| `"): cells[1] for cells in rows}


@pytest.mark.parametrize("schema, section", [(TrainConfig, "Meta-RL"), (SupervisedConfig, "Supervised")])
def test_every_key_is_documented_with_its_default(schema, section):
    documented = documented_defaults(section)
    defaults = config_to_dict(schema())
    assert list(documented) == list(defaults)  # every key, in the dataclass's order
    for key, value in defaults.items():
        expected = "unset" if value is None else f"`{dump_toml({key: value}).split(' = ', 1)[1].strip()}`"
        assert documented[key] == expected, key


def _help_texts(parser) -> list[str]:
    """Every option's help string of ``parser`` and its subcommands."""
    texts = []
    for action in parser._actions:
        texts.append(action.help or "")
        for sub in getattr(action, "choices", None) or {}:
            if hasattr(action.choices[sub], "_actions"):
                texts += _help_texts(action.choices[sub])
    return texts


def test_cli_help_names_the_config_defaults_it_quotes():
    # cli.py builds its parser without importing torch, so the help repeats a few defaults as numbers
    from metarl.cli import build_parser

    quoted = [m for text in _help_texts(build_parser()) for m in re.finditer(r"the config's (\w+), ([\d.]+)\)", text)]
    assert len(quoted) >= 4  # evaluate's --tasks/--steps/--episodes, adapt's --episodes
    for match in quoted:
        assert str(getattr(TrainConfig(), match[1])) == match[2], match[0]
