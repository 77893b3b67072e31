"""Typed options: dataclasses built from plain mappings with strict keys and types.

Every configurable part of the project is a dataclass whose fields (default and ``metadata={"help": ...}``)
are its options: the run config's sections (:mod:`generative_rec.config`), each item-ID scheme's
``options`` (:data:`generative_rec.indexing.base.SCHEME_OPTIONS`) and each baseline's hyper-parameters
(:data:`generative_rec.evaluation.baselines.base.BASELINE_OPTIONS`). :func:`from_dict` builds one from a
mapping: an unknown key or a value of the wrong type is a :class:`~generative_rec.errors.ConfigError` that
names the key (a typo must not silently fall back to a default). :func:`describe` lists a class's fields
for ``--help`` texts and for ``docs/options.md`` (:mod:`generative_rec.options_doc`, checked by a unit test).

Light on purpose (no numpy, no torch, no project module but ``errors``): the registries import it.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import types
import typing
from dataclasses import dataclass

from generative_rec.errors import ConfigError


@dataclass
class NoOptions:
    """Options of a scheme or baseline that has none: only ``{}`` is accepted."""


def from_dict(cls, d: dict | None, where: str = ""):
    """Build dataclass ``cls`` from a dict, recursing into dataclass fields; unknown keys are errors."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - names, key=str)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = from_dict(t, v, f"{where}.{k}" if where else k)
        else:
            kwargs[k] = _coerce(v, t, f"{where}.{k}" if where else k)
    return cls(**kwargs)


def _coerce(v, t, where: str):
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {v!r} does not fit {t}")
    if t is float and isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if t is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if t is bool and isinstance(v, bool):
        return v
    if t is str and isinstance(v, str):
        return v
    if origin is list and isinstance(v, list):
        return [_coerce(x, args[0], where) for x in v] if args else v
    if (t is dict or origin is dict) and isinstance(v, dict):
        return v
    if t is typing.Any:
        return v
    raise ConfigError(f"{where}: {v!r} is not a valid {getattr(t, '__name__', t)}")


def values(options) -> dict:
    """The fields of an options instance as a flat dict (values as they are, not deep-copied)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


# --------------------------------------------------------------------------- describing
@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: str
    help: str


def describe(cls) -> list[OptionDoc]:
    """Name, type, default and help of every init field of options dataclass ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if f.default is not dataclasses.MISSING:
            default = _show(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _show(f.default_factory())
        else:
            default = "(required)"
        out.append(OptionDoc(f.name, t, default, f.metadata.get("help", "")))
    return out


def _show(value) -> str:
    """A default as it is written in YAML / JSON (``null``, ``true``, ``0.0001``), else its repr."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def help_text(title: str, registry: dict[str, type], width: int = 100) -> str:
    """Plain-text listing of ``name -> options class`` (an argparse epilog)."""
    lines = [title]
    for name in sorted(registry):
        docs = describe(registry[name])
        lines.append(f"  {name}:" + ("" if docs else " no options"))
        for d in docs:
            line = f"{d.name}: {d.type} = {d.default}" + (f"  {d.help}" if d.help else "")
            lines.extend(textwrap.wrap(line, width, initial_indent="    ", subsequent_indent="        "))
    return "\n".join(lines)


def markdown_tables(registry: dict[str, type], level: str = "###") -> str:
    """One Markdown table per ``name -> options class`` (options, type, default, help)."""
    parts = []
    for name in sorted(registry):
        cls = registry[name]
        docs = describe(cls)
        parts.append(f"{level} `{name}` ({cls.__name__})\n")
        if not docs:
            parts.append("No options: only `{}` is accepted.\n")
            continue
        rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
        for d in docs:
            cells = [f"`{d.name}`", f"`{d.type}`", f"`{d.default}`", d.help]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)
