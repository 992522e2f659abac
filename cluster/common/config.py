"""Node options: one dataclass per node is the single definition of what it can be told.

Each node (master, volume, gateway, mount, `kelp up`) declares its options as a dataclass
whose fields carry, through `option(...)`, their help text and any extra flag spellings (the
original interface's `-ip`, `-gp`, `-n`). From that one definition come:

* the command-line flags (`add_flags`): `--<field-name>` plus the extra spellings, `--x` /
  `--no-x` for booleans, the help line with the default and the environment variable;
* the environment variables `KELP_<NODE>_<FIELD>` (and documented aliases such as
  `KELP_MASTER` for a mount's master address);
* the keys of a TOML file, at top level or under a `[<node>]` table.

`resolve` fills the dataclass from the three sources: flags win over the environment, which
wins over the file, which wins over the field's default. A key in the file or a variable with
the node's prefix that names no option is an error, so a typo never becomes a silently
ignored setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """Configuration a person must fix: unknown key, value of the wrong type."""


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           flags: Sequence[str] = (), choices: Sequence[str] | None = None,
           metavar: str | None = None, parse: Callable[[str], Any] | None = None,
           env: Sequence[str] = (), positional: bool = False, cli: bool = True,
           default_text: str | None = None) -> Any:
    """A dataclass field with what the flag, env and TOML spellings are derived from.

    flags: spellings besides `--field-name`, which is always accepted (e.g. "-ip", or
    "--replication" for default_replication). parse: turns a string from the command line,
    the environment or the file into the value (sizes such as "4M"). env: extra variables
    read before KELP_<NODE>_<FIELD> (compatibility names). cli=False: settable by env and
    file only.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flags": tuple(flags), "choices": tuple(choices) if choices else None,
        "metavar": metavar, "parse": parse, "env": tuple(env), "positional": positional,
        "cli": cli, "default_text": default_text})


@dataclasses.dataclass
class NodeOptions:
    """What every serving node (master, volume server, gateway) is told beyond its own work:
    transport security (cluster/common/security.py) and where to write its pid
    (cluster/common/node.py). These fields come first in each node's options."""
    tls_dir: str | None = option(None, "directory of the cluster's certificates and keys "
                                 "(`kelp certs DIR` makes it): mutual TLS on gRPC and CURVE on "
                                 "ZMQ", default_text="none: plain transport, loopback only")
    insecure: bool = option(False, "allow listening on a non-loopback address without TLS "
                            "(logged as a warning)")
    pid_file: str | None = option(None, "write the node's pid here once it serves (removed "
                                  "when it stops)", default_text="none")


def parse_size(text: str) -> int:
    """'4194304', '4M', '256MiB', '1g' -> bytes."""
    t = str(text).strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None


def _kind(field: dataclasses.Field) -> str:
    """The plain type name of a field ("int" for `int | None`): an optional option (None =
    decided at run time) takes the same values as the plain type."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    return kind.removeprefix("Optional[").removesuffix("]").removesuffix(" | None")


def _parse_bool(value: str) -> bool:
    low = value.strip().lower()
    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(value)
    return low in ("1", "true", "yes", "on")


def _coerce(field: dataclasses.Field, value: Any, source: str) -> Any:
    kind = _kind(field)
    parse = field.metadata.get("parse")
    try:
        if parse is not None and isinstance(value, str):
            value = parse(value)
        elif kind == "bool":
            value = _parse_bool(value) if isinstance(value, str) else bool(value)
        elif kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {field.name} wants a {kind}, got {value!r}") from None
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{source}: {field.name} is one of {', '.join(choices)}, "
                          f"not {value!r}")
    return value


def env_name(node: str, field_name: str) -> str:
    return f"KELP_{node.upper()}_{field_name.upper()}"


def _default_text(field: dataclasses.Field) -> str:
    if field.metadata.get("default_text"):
        return field.metadata["default_text"]
    default = field.default
    if default is None or default is dataclasses.MISSING:
        return "decided at run time"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def add_flags(parser: argparse.ArgumentParser, cls: type, node: str) -> None:
    """Add one flag per field of `cls` to `parser`. Every flag defaults to None (not given),
    so `resolve` can tell a flag from a default and let the environment and file speak."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        env = ", ".join([*meta.get("env", ()), env_name(node, f.name)])
        text = (f"{meta.get('help', '')} (default: {_default_text(f)}; env {env})"
                .replace("%", "%%"))
        if meta.get("positional"):   # required on the command line, as a mount point is
            parser.add_argument(f.name, help=meta.get("help", ""))
            continue
        long = "--" + f.name.replace("_", "-")
        spellings = list(meta.get("flags", ()))
        if long not in spellings:
            spellings.append(long)
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if _kind(f) == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _flag_type(f)
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
        parser.add_argument(*spellings, **kw)


def _flag_type(field: dataclasses.Field) -> Callable[[str], Any]:
    """argparse's converter for a field: its error becomes argparse's usage error (exit 2)."""
    def convert(text: str) -> Any:
        try:
            return _coerce(field, text, "flag")
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = _kind(field)
    return convert


def resolve(cls: type[T], node: str, flags: dict[str, Any] | argparse.Namespace,
            config_file: str | None = None) -> T:
    """Build `cls` from flags (None = not given), KELP_<NODE>_<FIELD> env vars, a TOML file.

    The TOML file may hold the keys at top level or under a [<node>] table.
    """
    if isinstance(flags, argparse.Namespace):
        flags = vars(flags)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_file:
        values.update(_from_file(fields, node, config_file))
    for f in fields.values():
        for alias in f.metadata.get("env", ()):
            if os.environ.get(alias):
                values[f.name] = _coerce(f, os.environ[alias], alias)
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
    try:
        return cls(**values)
    except TypeError as e:   # a required field (no default) nobody gave
        raise ConfigError(f"{node}: {e}") from None


def _from_file(fields: dict[str, dataclasses.Field], node: str,
               config_file: str) -> dict[str, Any]:
    try:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config file {config_file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {config_file}: {e}") from None
    table = data[node] if isinstance(data.get(node), dict) else data
    values = {}
    for key, value in table.items():
        if isinstance(value, dict):
            continue  # another node's table
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{config_file}: unknown option {key!r} for {node}")
        values[name] = _coerce(fields[name], value, config_file)
    return values
