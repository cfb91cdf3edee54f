"""config.json, checked: one schema for every setting in :data:`bridge.home.SETTINGS` (issue 11).

The schema (pydantic-core, the validator of pydantic v2) is built from ``SETTINGS`` (names and defaults:
one source; defaults are applied by :meth:`bridge.home.Home.config`, never repeated here) and the value
types below. A file with an unknown key, or a value of the wrong type or range, is refused with one
line that names the file, the setting and what was wrong; for an unknown key the closest known key is
suggested. :meth:`bridge.home.Home.config` checks the file on every load, and
:meth:`bridge.home.Home.update_config` checks what it is about to write, so nothing invalid is read or
written anywhere.

``parley config list|get|set|unset`` (bridge/cli.py) read and write through here.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from bridge.home import SETTINGS, HomeError, Setting

__all__ = [
    "ConfigError",
    "check_config",
    "parse_value",
    "suggest",
    "setting",
    "env_var",
    "MANAGED",
    "LIST_SETTINGS",
]


class ConfigError(HomeError):
    """config.json (or a value given for it) is not valid: the message is one line."""


# --- value types ---------------------------------------------------------------------------
#
# pydantic-core (pydantic v2's validator) with a schema built here, not pydantic.BaseModel: importing
# the latter and building a model costs a CLI command a few hundred milliseconds; this costs a few.
# Names not listed get a type from their SETTINGS default (bool, int, float, str, list of str; None:
# a string or null), so a setting added to SETTINGS is checked without touching this file.


def _schemas() -> dict[str, Any]:
    from pydantic_core import core_schema as cs

    def url() -> Any:
        return cs.str_schema(min_length=1, max_length=2048, strict=True)

    def urls(most: int) -> Any:
        return cs.list_schema(url(), max_length=most, strict=True)

    def positive() -> Any:  # the prekey settings: a positive number, or null for the built-in default
        return cs.nullable_schema(cs.float_schema(gt=0, allow_inf_nan=False, strict=True))

    previous = cs.typed_dict_schema(
        {"url": cs.typed_dict_field(cs.str_schema(strict=True)), "until": cs.typed_dict_field(cs.int_schema(strict=True))},
        extra_behavior="forbid",
    )
    return {
        "relays": urls(5),
        "directory_relays": urls(8),
        "relay_grace_days": cs.int_schema(ge=0, le=3650, strict=True),
        "previous_relays": cs.list_schema(previous, strict=True),
        "embedded_relay": cs.bool_schema(strict=True),
        "insecure_relays": cs.bool_schema(strict=True),
        "relay_url": cs.nullable_schema(url()),
        "port": cs.int_schema(ge=0, le=65535, strict=True),
        "chain_id": cs.int_schema(ge=1, strict=True),
        "retention_days": cs.int_schema(ge=1, le=3650, strict=True),
        "prekey_rotation_days": positive(),
        "prekey_grace_days": positive(),
        "prekey_check_seconds": positive(),
        "extension_ids": cs.list_schema(cs.str_schema(pattern=r"^[a-p]{32}$", strict=True), strict=True),
        "name_cache_ttl": cs.float_schema(ge=0, allow_inf_nan=False, strict=True),
        "backup_interval_minutes": cs.float_schema(gt=0, le=10080, allow_inf_nan=False, strict=True),
        "peer_refresh_minutes": cs.float_schema(ge=0.01, le=1440, allow_inf_nan=False, strict=True),
    }


def _schema_from_default(default: Any) -> Any:
    from pydantic_core import core_schema as cs

    if isinstance(default, bool):
        return cs.bool_schema(strict=True)
    if isinstance(default, int):
        return cs.int_schema(strict=True)
    if isinstance(default, float):
        return cs.float_schema(allow_inf_nan=False, strict=True)
    if isinstance(default, list):
        return cs.list_schema(cs.str_schema(strict=True), strict=True)
    return cs.nullable_schema(cs.str_schema(strict=True))


@lru_cache(maxsize=1)
def field_schemas() -> dict[str, Any]:
    """Every setting's value schema (pydantic-core), in SETTINGS order."""
    known = _schemas()
    return {s.name: known.get(s.name) or _schema_from_default(s.default) for s in SETTINGS}


@lru_cache(maxsize=1)
def _validator() -> Any:
    from pydantic_core import SchemaValidator, core_schema as cs

    fields = {name: cs.typed_dict_field(schema, required=False) for name, schema in field_schemas().items()}
    return SchemaValidator(cs.typed_dict_schema(fields, extra_behavior="forbid", strict=True))


def _whole(name: str) -> bool:
    schema = field_schemas()[name]
    return bool(schema.get("type") == "int")


def setting(name: str) -> Setting:
    """The setting called ``name``.

    Raises:
        ConfigError: no such setting (the message suggests the closest one).
    """
    for s in SETTINGS:
        if s.name == name:
            return s
    shown = name if len(name) <= 60 else name[:57] + "..."
    raise ConfigError(f"unknown setting {shown!r}{suggest(name)} (see `parley config list`)")


def suggest(name: str) -> str:
    """`` (did you mean 'port'?)`` for the closest known setting, or ``""``."""
    close = difflib.get_close_matches(name, [s.name for s in SETTINGS], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Settings ``parley config set`` refuses: other commands keep them consistent.
MANAGED: dict[str, str] = {
    "previous_relays": "kept by `parley relays set`",
    "embedded_relay": "recorded by `parley run`",
    "relay_url": "older homes' setting; use `parley config set relays URL`",
}

#: Settings whose value is a list: ``parley config set NAME a,b,c`` (comma-separated; "" is the empty list).
LIST_SETTINGS = frozenset(s.name for s in SETTINGS if isinstance(s.default, list))


def env_var(name: str) -> str | None:
    """The environment variable that overrides setting ``name`` (None: none does)."""
    if name == "directory_relays":
        return "PARLEY_DIRECTORY_RELAYS"
    from bridge.resolve import ENV_SETTINGS

    return ENV_SETTINGS.get(name)


_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "none_required": "must be null",
    "extra_forbidden": "is not a known field",
}


def _describe(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        word = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most", "less_than": "less than"}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"must be {word} {bound}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries" if "max_length" in ctx else "is too long"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return "must be a Chrome extension id (32 letters a-p)" if err.get("loc", ("",))[0] == "extension_ids" else "is not of the expected form"
    if kind == "missing":
        return "is missing"
    return str(err.get("msg", "is not valid")).lower()


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _shown(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def check_config(data: Any, source: str) -> dict[str, Any]:
    """``data`` (a config.json's contents) checked against the schema; returns it unchanged.
    ``source`` (the file) starts the error message.

    Raises:
        ConfigError: not an object, an unknown key, or a bad value: one line starting with ``source``.
    """
    at = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{at}must be a JSON object, not {type(data).__name__}")
    known = {s.name for s in SETTINGS}
    for key in data:
        if key not in known:
            shown = key if len(key) <= 60 else key[:57] + "..."
            raise ConfigError(f"{at}unknown setting {shown!r}{suggest(key)} (see `parley config list`)")
    from pydantic_core import ValidationError

    try:
        _validator().validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err.get("loc", ()))
        raise ConfigError(f"{at}{_where(loc)}: {_describe(err)} (got {_shown(err.get('input'))})") from None
    return data


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(name: str, text: str) -> Any:
    """What ``parley config set NAME TEXT`` stores: TEXT read as the setting's type (true/false,
    a number, a string; a list is comma-separated, "" the empty list), then checked.

    Raises:
        ConfigError: unknown setting or a value the schema refuses (one line).
    """
    s = setting(name)
    if name in LIST_SETTINGS:
        value: Any = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(s.default, bool) or name in ("embedded_relay", "insecure_relays"):
        low = text.strip().lower()
        if low not in _TRUE | _FALSE:
            raise ConfigError(f"{name}: must be true or false (got {_shown(text)})")
        value = low in _TRUE
    elif _numeric(name, s.default):
        value = _number(name, text, whole=_whole(name))
    else:
        value = text
    check_config({name: value}, "")
    return value


def _numeric(name: str, default: Any) -> bool:
    return (isinstance(default, (int, float)) and not isinstance(default, bool)) or name.startswith("prekey_")


def _number(name: str, text: str, *, whole: bool) -> int | float:
    raw = text.strip()
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be {'an integer' if whole else 'a number'} (got {_shown(text)})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number (got {_shown(text)})")
    return value
