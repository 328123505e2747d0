"""Typed configurations: defaults in code, then a YAML file, then `key=value` overrides. A setting may be a group
of settings (a dataclass), written as a YAML mapping or as `group.name=value`."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

C = TypeVar("C")
MAX_CONFIG_BYTES = 1 << 20
MAX_VALUE_CHARS = 1000


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping that names a key twice is an error (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(None, None, f"setting {key!r} given twice", node.start_mark)
        return super().construct_mapping(node, deep)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):  # an alias can expand a few bytes into gigabytes
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a settings file", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def _parse_value(name: str, text: str, kind: Any) -> Any:
    """Parse a `--set` value against the field's declared type."""
    if len(text) > MAX_VALUE_CHARS:
        raise UserError(f"--set {name}: a value of {len(text):,} characters (at most {MAX_VALUE_CHARS})")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        value = text
    return check_type(name, value, kind)


def check_type(name: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_type(name, value, option)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise UserError(f"setting '{name}': {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        (item_kind, *_) = typing.get_args(kind) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"setting '{name}': expected a list, got {value!r}")
        return [check_type(name, v, item_kind) for v in value]
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"setting '{name}': expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"setting '{name}': expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise UserError(f"setting '{name}': expected a finite number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"setting '{name}': expected a string, got {value!r}")
    raise UserError(f"setting '{name}': unsupported type {kind}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def setting_types(cls: type) -> dict[str, Any]:
    """Every setting of `cls` and its type; the settings of a group as `group.name`."""
    kinds = {}
    for name, kind in field_types(cls).items():
        if dataclasses.is_dataclass(kind):
            kinds |= {f"{name}.{sub}": sub_kind for sub, sub_kind in field_types(kind).items()}
        else:
            kinds[name] = kind
    return kinds


def _flatten(mapping: dict, groups: dict[str, type], where: str) -> dict[str, Any]:
    """`mapping` with each group's mapping (or dataclass) given as `group.name` keys."""
    flat = {}
    for key, value in mapping.items():
        if key not in groups:
            flat[key] = value
            continue
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            names = ", ".join(f.name for f in dataclasses.fields(groups[key]))
            raise UserError(f"setting '{key}'{where}: expected a mapping of its settings ({names})")
        flat |= {f"{key}.{sub}": v for sub, v in value.items()}
    return flat


def build_config(
    cls: type[C],
    file: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    base: dict[str, Any] | None = None,
) -> C:
    """Defaults of `cls` (or the checked settings `base`), updated by the YAML `file`, then by `key=value`
    strings."""
    kinds = setting_types(cls)
    groups = {name: kind for name, kind in field_types(cls).items() if dataclasses.is_dataclass(kind)}
    values: dict[str, Any] = _flatten(dict(base or {}), groups, "")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(
                f"{path}: {path.stat().st_size:,} bytes; a settings file is at most {MAX_CONFIG_BYTES:,} bytes"
            )
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader) or {}
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not a UTF-8 text file ({err.reason})") from None
        except (yaml.YAMLError, ValueError) as err:  # ValueError: an integer of thousands of digits
            raise UserError(f"{path}: not valid YAML ({str(err)[:300]})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping of setting names to values")
        for key, value in _flatten(loaded, groups, f" in '{path}'").items():
            if key not in kinds:
                raise UserError(f"{path}: unknown setting '{key}' (known: {', '.join(sorted(kinds))})")
            values[key] = check_type(f"{key}' in '{path}", value, kinds[key])
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--set {item!r}: expected key=value")
        if key not in kinds:
            raise UserError(f"--set {key}: unknown setting (known: {', '.join(sorted(kinds))})")
        values[key] = _parse_value(key, text.strip(), kinds[key])
    for name, kind in groups.items():
        prefix = f"{name}."
        values[name] = kind(**{k[len(prefix) :]: values.pop(k) for k in list(values) if k.startswith(prefix)})
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config
