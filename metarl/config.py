"""Flat TOML configs validated against a dataclass: unknown keys and bad values are one-line errors.

A config file is a flat TOML table (``key = value``) whose keys are the fields of a
dataclass; ``--set key=value`` overrides are parsed as TOML values (``--set
hidden_sizes=[64,64]``, ``--set env=\"metarl/AntVel-v0\"`` or bare strings).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from metarl.errors import UserError

C = TypeVar("C")


def _other_kind(schema: type, keys: set[str]) -> str | None:
    """The other config kind (and the commands that read it) whose fields hold all of ``keys``, if there is one:
    a config or run of one kind given to the other kind's command is named as such, not as unknown keys."""
    # imported here: both modules import this one
    from metarl.supervised.config import SupervisedConfig
    from metarl.training import TrainConfig

    kinds = {TrainConfig: "meta-RL (`metarl train`, `evaluate`, `compare`, `adapt`, `bench`)",
             SupervisedConfig: "supervised (`metarl supervised train`, `evaluate`)"}
    for other, description in kinds.items():
        if other is not schema and keys <= {f.name for f in dataclasses.fields(other)}:
            return description
    return None


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string such as --set activation=tanh
    return key, value


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (int, float, bool, str, tuple/list, Optional)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key {name!r}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {name!r} expects a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(name, v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {name!r} expects true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {name!r} expects an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {name!r} expects a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"config key {name!r} expects a string, got {value!r}")
        return value
    return value


def build_config(schema: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Make a ``schema`` instance from a flat dict, rejecting unknown keys and ill-typed values.

    After construction the dataclass's own ``validate()`` (if any) checks ranges.
    """
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - fields)
    if unknown and (kind := _other_kind(schema, set(values))) is not None:
        raise UserError(f"{source}: a {kind} config, not one for this command")
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r} in {source} (known: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    config = schema(**kwargs)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def load_config(schema: type[C], path: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """Read a TOML file (optional), apply ``key=value`` overrides, validate into ``schema``."""
    values: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
        nested = [k for k, v in values.items() if isinstance(v, dict)]
        if nested:
            raise UserError(f"config file {path}: tables are not supported, flatten [{nested[0]}]")
    fields = {f.name for f in dataclasses.fields(schema)}
    for item in overrides:
        key, value = _parse_override(item)
        if key not in fields:  # name the --set item, not the file it would have overridden
            raise UserError(f"unknown config key {key!r} in --set {item} (known: {', '.join(sorted(fields))})")
        values[key] = value
    return build_config(schema, values, source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A TOML-ready dict of a config dataclass (tuples become lists)."""
    out = {}
    for k, v in dataclasses.asdict(config).items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def dump_toml(values: dict[str, Any]) -> str:
    """Write a flat dict of str/int/float/bool/list values as TOML (None values are left out)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    return "".join(f"{k} = {fmt(v)}\n" for k, v in values.items() if v is not None)


# Keys a resumed run may change: the length of the run, and thread counts, which set speed only
# (another count may round float sums differently, but it is the same experiment).
RESUME_MAY_CHANGE = ("iterations", "num_threads", "threads")


def first_difference(ours: dict[str, Any], saved: dict[str, Any], also_may_change: tuple[str, ...] = ()) -> str | None:
    """The first key of both config dicts (other than those in ``RESUME_MAY_CHANGE`` and
    ``also_may_change``) whose values differ; None when they agree. A key only one side has (a key
    newer than a saved checkpoint) is no difference."""
    exempt = RESUME_MAY_CHANGE + tuple(also_may_change)
    return next((k for k in ours if k in saved and k not in exempt and ours[k] != saved[k]), None)


def check_resumable(config: Any, saved: Any, also_may_change: tuple[str, ...] = ()) -> None:
    """A UserError naming the first key (other than those in ``RESUME_MAY_CHANGE`` and
    ``also_may_change``, which the caller checks itself) where ``config`` differs from the run's
    ``saved`` config: a resumed run must continue the same experiment."""
    ours, theirs = config_to_dict(config), config_to_dict(saved)
    key = first_difference(ours, theirs, also_may_change)
    if key is not None:
        raise UserError(f"--resume: config key {key!r} differs from the run's saved config "
                        f"({ours[key]!r} vs {theirs[key]!r}); only the iteration and thread counts may change")
