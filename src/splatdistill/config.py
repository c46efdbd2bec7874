"""Typed, nested configs from YAML and ``key=value`` overrides: the one config-to-CLI bridge.

Every command's options are a (possibly nested) dataclass. :func:`load_config` builds one from its
defaults, then a YAML file, then ``key=value`` overrides, checking each value against the field's
annotation (``Literal`` choices included). One key grammar: a dotted path (``optim.lr=2e-5``) or any
tail of it that is unique in the tree (``lr=2e-5``, ``fit3d.iterations=7``), as ``key=value`` or as the
flag ``--key value``; an unknown key names its nearest spelling. Values typed on the command line are
read by the field's type, never by YAML's guesses (``out=off`` is the folder "off").
:func:`config_to_dict` / :func:`dump_yaml` are the inverse, used by ``--print-config``.
:class:`ConfigParser` generates each command's flags from its config class when that command runs
(so ``splatdistill --help`` does not import torch), with the field comments as help.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from splatdistill.errors import UserError

C = TypeVar("C")


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def leaf_paths(cls: type, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf field of a nested config class: path -> annotation."""
    hints = typing.get_type_hints(cls)
    out: dict[tuple[str, ...], Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if _is_config(tp):
            out.update(leaf_paths(tp, prefix + (f.name,)))
        else:
            out[prefix + (f.name,)] = tp
    return out


def key_aliases(cls: type) -> dict[str, tuple[str, ...]]:
    """Accepted keys -> leaf path: every dotted path, and every tail of one that no other path shares
    (``lr``, ``lora.r``), plus the class's declared ``ALIASES``."""
    paths = list(leaf_paths(cls))
    tails: dict[str, list[tuple[str, ...]]] = {}
    for p in paths:
        for i in range(1, len(p)):
            tails.setdefault(".".join(p[i:]), []).append(p)
    aliases: dict[str, tuple[str, ...]] = {".".join(p): p for p in paths}
    for tail, owners in tails.items():
        if len(owners) == 1:
            aliases.setdefault(tail, owners[0])
    aliases.update({k: tuple(v.split(".")) for k, v in getattr(cls, "ALIASES", {}).items()})
    return aliases


def did_you_mean(key: str, accepted: Sequence[str], aliases: dict[str, tuple[str, ...]] | None = None) -> str:
    """`` (did you mean X?)`` for the accepted spelling nearest to ``key`` (difflib), or ""."""
    last = key.rsplit(".", 1)[-1]
    if aliases and "." in key and last in aliases:  # the right name in the wrong group
        return f" (did you mean {'.'.join(aliases[last])}?)"
    close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def group_paths(cls: type, prefix: str = "") -> set[str]:
    """Dotted paths of the nested config groups of ``cls`` (e.g. ``{"data", "method", "method.splat"}``)."""
    hints = typing.get_type_hints(cls)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if _is_config(hints[f.name]):
            out.add(prefix + f.name)
            out |= group_paths(hints[f.name], prefix + f.name + ".")
    return out


def flatten_values(values: dict[str, Any], groups: set[str], prefix: str = "") -> dict[str, Any]:
    """Nested mappings of config groups (as YAML gives them) -> dotted keys; other values (dict-typed
    options included) are kept whole."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in groups:
            out.update(flatten_values(v, groups, key + "."))
        else:
            out[key] = v
    return out


def build_config(cls: type[C], values: dict[str, Any], source: str = "config", validate: bool = True) -> C:
    """A config of class ``cls`` from flat or nested ``values`` (checked and converted; ``validate=False``
    leaves the cross-field checks, such as the device, to the code that runs it)."""
    aliases = key_aliases(cls)
    hints = leaf_paths(cls)
    resolved: dict[tuple[str, ...], Any] = {}
    unknown = []
    retired = getattr(cls, "RETIRED", ())  # fields removed since a run saved them: read past, never used
    for key, value in flatten_values(values, group_paths(cls)).items():
        path = aliases.get(key)
        if path is None and key in retired:
            continue
        if path is None:
            unknown.append(key)
            continue
        resolved[path] = _coerce(".".join(path), value, hints[path], source)
    if unknown:
        named = ", ".join(k + did_you_mean(k, aliases, aliases) for k in sorted(unknown))
        raise UserError(f"{source}: unknown option(s) {named}")
    _apply_preset(cls, resolved, source)
    cfg = _construct(cls, resolved, ())
    check = getattr(cfg, "validate", None)
    if validate and callable(check):
        check()  # raises a UserError naming the bad option
    return cfg


def _apply_preset(cls: type, resolved: dict[tuple[str, ...], Any], source: str) -> None:
    """Fill the options a ``preset`` leaf names (``cls.PRESETS[name]``, flat keys) unless given explicitly:
    class defaults < preset < YAML file < ``key=value``. ``cls.PRESET_REQUIRES[name]`` names keys the user must
    set explicitly with that preset (key -> why)."""
    presets = getattr(cls, "PRESETS", None)
    path = key_aliases(cls).get("preset")
    if not presets or path is None or path not in resolved:
        return
    name = resolved[path]
    if name not in presets:
        raise UserError(f"{source}: unknown preset {name!r} (choose {', '.join(sorted(presets))})")
    aliases, hints = key_aliases(cls), leaf_paths(cls)
    for key, why in getattr(cls, "PRESET_REQUIRES", {}).get(name, {}).items():
        if aliases[key] not in resolved:  # a choice the preset cannot make for the user
            raise UserError(f"{source}: preset={name} needs {key}=... set explicitly: {why}")
    for key, value in flatten_values(presets[name], group_paths(cls)).items():
        leaf = aliases[key]
        if leaf not in resolved:
            resolved[leaf] = _coerce(".".join(leaf), value, hints[leaf], f"preset {name}")


def _construct(cls: type, resolved: dict[tuple[str, ...], Any], prefix: tuple[str, ...]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path = prefix + (f.name,)
        if _is_config(hints[f.name]):
            kwargs[f.name] = _construct(hints[f.name], resolved, path)
        elif path in resolved:
            kwargs[f.name] = resolved[path]
    return cls(**kwargs)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError("config file not found", p)
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML ({str(exc).splitlines()[0]})", p) from None
    if not isinstance(loaded, dict):
        raise UserError("config must be a mapping of option: value", p)
    return loaded


class Text(str):
    """A value typed on the command line: read by its field's type, never by YAML's guesses (``out=off``
    stays the string "off"; ``steps=10`` becomes the int 10)."""


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value")
        values[key.strip()] = Text(raw)
    return values


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), defaults: dict[str, Any] | None = None
) -> C:
    """Defaults (the class's, then ``defaults``), then the YAML file (if any), then ``key=value`` overrides."""
    groups = group_paths(cls)
    values: dict[str, Any] = dict(flatten_values(defaults or {}, groups))
    aliases = key_aliases(cls)

    def merge(new: dict[str, Any]) -> None:  # a later key wins, whichever alias it uses
        for k, v in flatten_values(new, groups).items():
            path = aliases.get(k)
            for old in [o for o in values if path is not None and aliases.get(o) == path]:
                del values[old]
            values[k] = v

    if path is not None:
        merge(read_yaml_mapping(path))
    merge(parse_overrides(overrides))
    return build_config(cls, values, source=str(path) if path else "overrides")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) for YAML/JSON."""
    return _plain(dataclasses.asdict(cfg))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


NULLS = ("null", "none", "None", "~")
BOOL_WORDS = ("1", "true", "yes", "on", "0", "false", "no", "off")


def _takes_text(hint: Any) -> bool:
    """Fields whose command-line text is used as typed: strings and string choices."""
    if typing.get_origin(hint) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(hint))
    return hint is str


def _read_text(value: Text) -> Any:
    """Command-line text for a non-string field: a YAML scalar (numbers, booleans, lists, mappings)."""
    try:
        return yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return str(value)


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check/convert one value to the field's annotated type (YAML gives ints for floats etc.)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args and (value is None or (isinstance(value, Text) and value.strip() in NULLS)):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first member the value fits (e.g. int | str: 224 or "574x868")
            try:
                return _coerce(name, value, option, source)
            except UserError:
                continue
        hint = options[-1]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, Text):
        value = str(value) if _takes_text(hint) else _read_text(value)
    if origin is Literal:
        if value in args:
            return value
        choices = [str(a) for a in args]
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise UserError(f"{source}: option {name} must be {listed}, got {value!r}{did_you_mean(str(value), choices)}")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in BOOL_WORDS[:4]:
                return True
            if str(value).lower() in BOOL_WORDS[4:]:
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if isinstance(value, bool):  # YAML reads off/on/yes/no unquoted as booleans
                raise UserError(
                    f"{source}: option {name} expects a string, got {value!r} (YAML reads unquoted "
                    "off/on/yes/no as booleans: quote the value)"
                )
            return str(value)
        if hint is dict or origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
        if origin is tuple:
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
            return tuple(items)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UserError(f"{source}: option {name} expects {getattr(hint, '__name__', hint)}, got {value!r}")


# ---- the command-line bridge ------------------------------------------------------------------------


def add_config_arguments(parser, config: str, what: str = "config") -> None:
    """``key=value`` overrides, ``--config FILE``, ``--print-config``, and a ``--key value`` flag for every
    field of ``config`` (``"module:Class"``, imported only when this command parses or prints its help)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help=f"{what} overrides: any option below as key=value (after the flags, so they win)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (values are overridden by flags and key=value)"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.config_spec = config
    parser.usage = "%(prog)s [-h] [--config FILE] [--print-config] [--KEY VALUE ...] [KEY=VALUE ...]"


class ConfigParser(argparse.ArgumentParser):
    """An argument parser whose config flags are generated from the command's config class when it runs:
    ``--a.b v`` (and ``--b v`` for a unique tail, ``-`` for ``_`` accepted) set the field ``a.b``."""

    config_spec: str | None = None
    _config_flags: dict[str, str] | None = None  # dest -> dotted path

    def config_class(self) -> type:
        module, _, name = (self.config_spec or "").partition(":")
        return getattr(importlib.import_module(module), name)

    def _add_config_flags(self) -> None:
        if self.config_spec is None or self._config_flags is not None:
            return
        cls = self.config_class()
        self._config_flags = {}
        short: dict[tuple[str, ...], list[str]] = {}
        for key, path in key_aliases(cls).items():
            if "." not in key and key != ".".join(path):
                short.setdefault(path, []).append(f"--{key}")
        defaults, groups = flat_defaults(cls), {}
        for path, hint in leaf_paths(cls).items():
            full = ".".join(path)
            if f"--{full}" in self._option_string_actions or any(  # the command's own flag wins
                n in self._option_string_actions for n in short.get(path, [])
            ):
                continue
            group = ".".join(path[:-1]) or "options"
            if group not in groups:
                groups[group] = self.add_argument_group(f"{group} options" if path[:-1] else "config options")
            dest = f"config:{full}"
            also = "; also " + ", ".join(sorted(short[path])) if short.get(path) else ""
            text = f"{field_help(_owner(cls, path)).get(path[-1], '')} (default: {defaults[path]!r}{also})".strip()
            extra = {"nargs": "?", "const": "true"} if hint is bool else {}
            groups[group].add_argument(
                f"--{full}",
                dest=dest,
                default=argparse.SUPPRESS,
                metavar=_metavar(hint),
                help=text.replace("%", "%%"),
                **extra,
            )
            self._config_flags[dest] = full

    def _config_argv(self, args: list[str]) -> list[str]:
        """``--tail`` / ``--a-b`` spellings -> the generated ``--a.b``; a bare boolean flag -> ``=true`` (so it
        never takes the next word); an unknown ``--key`` stops with its nearest spelling."""
        if self._config_flags is None:
            return args
        cls = self.config_class()
        aliases, hints = key_aliases(cls), leaf_paths(cls)
        out = []
        for n, token in enumerate(args):
            if token == "--":
                return out + args[n:]
            name, eq, value = token[2:].partition("=")
            own = self._option_string_actions.get(f"--{name}")
            if not token.startswith("--") or (own is not None and own.dest not in self._config_flags):
                out.append(token)
                continue
            path = aliases.get(name.replace("-", "_"))
            if path is None:
                known = [k for k in aliases] + [o[2:] for o in self._option_string_actions if o.startswith("--")]
                raise UserError(
                    f"unknown option --{name}{did_you_mean(name, known, aliases).replace('mean ', 'mean --')}"
                )
            following = args[n + 1].lower() if n + 1 < len(args) else ""
            if hints[path] is bool and not eq and following not in BOOL_WORDS:
                eq, value = "=", "true"
            out.append(f"--{'.'.join(path)}{eq}{value}")
        return out

    def parse_known_args(self, args=None, namespace=None):
        self._add_config_flags()
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._config_argv(args), namespace)

    def format_help(self) -> str:
        self._add_config_flags()
        return super().format_help()


def _owner(cls: type, path: tuple[str, ...]) -> type:
    """The config class that declares the leaf ``path``."""
    for part in path[:-1]:
        cls = typing.get_type_hints(cls)[part]
    return cls


def _metavar(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(hint)) + "}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return "|".join(_metavar(a) for a in typing.get_args(hint)).replace("NoneType", "null")
    return getattr(hint, "__name__", str(hint)).upper().replace("NONETYPE", "NoneType")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each field's comment in the class source (the comment lines above it and the one on its line), as help."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    start = next(n for n, ln in enumerate(lines) if ln.lstrip().startswith("class "))
    body = next((len(ln) - len(ln.lstrip()) for ln in lines[start + 1 :] if ln.strip()), 4)
    out: dict[str, str] = {}
    above: list[str] = []
    for number, line in enumerate(lines, 1):
        field = re.match(rf"^ {{{body}}}(\w+)\s*:", line)
        if line.strip().startswith("#") and len(line) - len(line.lstrip()) == body:
            above.append(comments.get(number, ""))
            continue
        if field:
            out[field.group(1)] = " ".join(above + ([comments[number]] if number in comments else []))
        above = []
    return out


def flat_defaults(cls: type) -> dict[tuple[str, ...], Any]:
    """Each leaf's default value, by path."""
    cfg = cls()
    return {path: _plain(functools.reduce(getattr, path, cfg)) for path in leaf_paths(cls)}


def config_from_args(
    cls: type[C],
    args,
    flags: dict[str, Any] | None = None,
    config_path: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> C:
    """The command's config: class defaults < ``defaults`` < ``--config`` < the command's own flags
    (``flags``: config key -> value, ``None`` = not given) < generated ``--key`` flags < ``key=value``."""
    overrides = [f"{k}={_flag_text(v)}" for k, v in (flags or {}).items() if v is not None]
    overrides += command_line_overrides(args)
    return load_config(cls, config_path or getattr(args, "config", None), overrides, defaults)


def command_line_overrides(args) -> list[str]:
    """``key=value`` items of the generated flags, then the positional ``key=value`` items, in that order."""
    flags = [f"{k.split(':', 1)[1]}={v}" for k, v in vars(args).items() if k.startswith("config:")]
    return flags + list(getattr(args, "overrides", None) or [])


def _flag_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return yaml.safe_dump(list(value), default_flow_style=True).strip()
    return str(value)


def flat_config(cfg: Any) -> dict[str, Any]:
    """Leaf values keyed by their shortest accepted key (bare name when unique, else the dotted path)."""
    cls = type(cfg)
    best: dict[tuple[str, ...], str] = {}
    for key, path in key_aliases(cls).items():
        if path not in best or len(key) < len(best[path]):
            best[path] = key
    return {best[path]: _plain(functools.reduce(getattr, path, cfg)) for path in leaf_paths(cls)}
