"""Typed configuration: dataclass schemas filled from YAML files and ``key=value`` overrides.

A YAML file may start from others with ``_base_: other.yaml`` (or a list, merged in order, paths
relative to the file); its own keys then override the base. Overrides on the command line use
dotted keys (``trainer.epochs=20``, ``model.weights=null``). Every key is checked against the
schema: an unknown key is a :class:`~vidseg.errors.ConfigError` that names the file or option and
suggests the closest valid key, and a value of the wrong type names the key and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidseg.errors import ConfigError
from vidseg.utils.io import atomic_write, read_yaml

T = TypeVar("T")

BASE_KEY = "_base_"


def load_config(
    schema: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Build a ``schema`` instance from defaults, the YAML file at ``path`` and ``overrides``."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        data = _read_with_bases(Path(path), ())
        _check_keys(schema, data, source=str(path))
        merged = _merge(merged, data, source=str(path))
    for item in overrides:
        key, value = _parse_override(item)
        _check_keys(schema, _nest(key, value), source=f"override '{item}'")
        merged = _merge(merged, _nest(key, value), source=f"override '{item}'")
    return to_object(merged, source=str(path) if path else "the configuration")


def to_object(merged: Any, source: str) -> Any:
    """Turn a merged OmegaConf node into dataclass instances (running their validation)."""
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{source}: required key '{missing[0]}' has no value")
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_first_line(exc)}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (for YAML and JSON)."""
    return dataclasses.asdict(cfg)


def save_config(path: str | os.PathLike[str], cfg: Any) -> None:
    """Write the fully resolved ``cfg`` as YAML atomically (loadable with :func:`load_config`)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def config_keys(schema: type) -> list[str]:
    """Every dotted key of ``schema`` (leaves and sections), in declaration order."""
    return list(_walk_keys(schema, ""))


def _walk_keys(schema: type, prefix: str) -> Iterator[str]:
    hints = get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key = f"{prefix}{field.name}"
        yield key
        sub = hints[field.name]
        if dataclasses.is_dataclass(sub):
            yield from _walk_keys(sub, key + ".")


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: '{BASE_KEY}' files include each other ({cycle})")
    if not path.is_file():
        where = f" (named in {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} does not exist{where}")
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _deep_update(merged, _read_with_bases(path.parent / base, (*chain, resolved)))
    return _deep_update(merged, data)


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_update(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _check_keys(
    schema: type, data: Mapping[str, Any], source: str, prefix: str = "", root: type | None = None
) -> None:
    root = root or schema
    hints = get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(root, dotted)}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            if isinstance(value, Mapping):
                _check_keys(sub, value, source, dotted + ".", root)
            elif value is not None:
                raise ConfigError(
                    f"{source}: '{dotted}' is a section; give its keys (e.g. "
                    f"'{dotted}.{dataclasses.fields(sub)[0].name}'), not the value {value!r}"
                )


def _suggest(root: type, dotted: str) -> str:
    # Search every key of the schema, so that a key put in the wrong section is found too.
    keys = config_keys(root)
    leaf = dotted.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != dotted]
    if same_leaf:
        return f"; did you mean '{same_leaf[0]}'?"
    close = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    if not close:
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[near[0]]] if near else []
    return f"; did you mean '{close[0]}'?" if close else ""


def _merge(merged: Any, data: Mapping[str, Any], source: str) -> Any:
    try:
        return OmegaConf.merge(merged, data)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f" at '{key}'" if key else ""
        raise ConfigError(f"{source}: invalid value{where}: {_first_line(exc)}") from None


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.epochs=5)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override '{item}': '{key}' is not a dotted key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
