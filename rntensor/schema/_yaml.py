"""Reading a schema safely: a path or YAML text, bounded in size, duplicate keys refused.

Used by :func:`rntensor.schema.load.load_schema`; :func:`_clip` bounds every value quoted in
an error message.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

import yaml

from rntensor.errors import SchemaError

MAX_SCHEMA_BYTES = 1 << 20


def _as_path(obj: str | os.PathLike[str]) -> str | None:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if "\n" in obj or len(obj) > 4096:
        return None
    if obj.endswith((".yaml", ".yml")) or os.path.isfile(obj):
        return obj
    return None


def _read(path: str) -> str:
    try:
        size = os.path.getsize(path)
        if size > MAX_SCHEMA_BYTES:
            raise SchemaError(
                f"schema file {path} is {size} bytes, more than the limit of "
                f"{MAX_SCHEMA_BYTES}; is it the right file?"
            )
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as err:
        raise SchemaError(f"schema file not found: {path}; check the path") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SchemaError(f"cannot read schema file {path}: {err}") from err


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SchemaError(
                f"YAML key {_clip(key)} is not a name (line {key_node.start_mark.line + 1})"
            )
        if key in out:
            raise SchemaError(
                f"key {key!r} appears twice in one mapping (line "
                f"{key_node.start_mark.line + 1}); keep one"
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _parse_yaml(text: str, path: str | None) -> Any:
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"schema text of {len(text)} characters is longer than the limit")
    where = f"schema file {path}" if path else "schema text"
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SchemaError(f"invalid YAML in {where}{line}: {problem}") from err
    except RecursionError as err:
        raise SchemaError(f"invalid YAML in {where}: nested too deeply") from err


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 50, 50


def _clip(x: Any) -> str:
    """A short repr, bounded even for a YAML alias bomb."""
    r = _REPR.repr(x)
    return r if len(r) <= 80 else r[:77] + "..."
