"""Node options: flags first, then KELP_* environment variables, then an optional TOML file.

Each node declares its options as a dataclass (MasterOptions, VolumeOptions, GatewayOptions);
`resolve` fills one from the three sources. A key in the TOML file or a KELP_<NODE>_* variable
that names no option is an error, so a typo never becomes a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Configuration a person must fix: unknown key, value of the wrong type."""


def _coerce(field: dataclasses.Field, value: Any, source: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    # An optional option (None = decided at run time) takes the same values as the plain type.
    kind = kind.removeprefix("Optional[").removesuffix("]").removesuffix(" | None")
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {field.name} wants a {kind}, got {value!r}") from None


def resolve(cls: type[T], node: str, flags: dict[str, Any], config_file: str | None = None) -> T:
    """Build `cls` from flags (None = not given), KELP_<NODE>_<FIELD> env vars, a TOML file.

    The TOML file may hold the keys at top level or under a [<node>] table.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config_file}: {e}") from None
        table = data.get(node, data) if isinstance(data.get(node), dict) else data
        for key, value in table.items():
            if isinstance(value, dict):
                continue  # another node's table
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{config_file}: unknown option {key!r} for {node}")
            values[name] = _coerce(fields[name], value, config_file)
    prefix = f"KELP_{node.upper()}_"
    for key, value in os.environ.items():
        if key.startswith(prefix):
            name = key[len(prefix):].lower()
            if name not in fields:
                raise ConfigError(f"environment: {key} names no {node} option")
            values[name] = _coerce(fields[name], value, key)
    for name, value in flags.items():
        if value is not None and name in fields:
            values[name] = _coerce(fields[name], value, "flag")
    return cls(**values)
