"""Typed, nested configs from YAML and ``key=value`` overrides: the one config-to-CLI bridge.

Every command's options are a (possibly nested) dataclass. :func:`load_config` builds one from its
defaults, then a YAML file, then ``key=value`` overrides, checking each value against the field's
annotation (``Literal`` choices included). Keys are dotted paths (``optim.lr=2e-5``) or, when unique
in the tree, a field's bare name (``lr=2e-5``); nested groups may also carry flat aliases
(``fit3d_iterations`` for ``method.fit3d.iterations``), which keeps flat files and old checkpoints
loadable. :func:`config_to_dict` / :func:`dump_yaml` are the inverse, used by ``--print-config``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

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
    """Accepted keys -> leaf path: dotted paths, unique bare names, and ``group_name`` flat aliases."""
    paths = list(leaf_paths(cls))
    aliases: dict[str, tuple[str, ...]] = {".".join(p): p for p in paths}
    counts: dict[str, int] = {}
    for p in paths:
        counts[p[-1]] = counts.get(p[-1], 0) + 1
    for p in paths:
        if counts[p[-1]] == 1:
            aliases.setdefault(p[-1], p)
        if len(p) >= 3:  # e.g. method.fit3d.iterations -> fit3d_iterations
            aliases.setdefault(f"{p[-2]}_{p[-1]}", p)
    aliases.update({k: tuple(v.split(".")) for k, v in getattr(cls, "ALIASES", {}).items()})
    return aliases


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


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """A config of class ``cls`` from flat or nested ``values`` (checked and converted)."""
    aliases = key_aliases(cls)
    hints = leaf_paths(cls)
    resolved: dict[tuple[str, ...], Any] = {}
    unknown = []
    for key, value in flatten_values(values, group_paths(cls)).items():
        path = aliases.get(key)
        if path is None:
            unknown.append(key)
            continue
        resolved[path] = _coerce(".".join(path), value, hints[path], source)
    if unknown:
        raise UserError(f"{source}: unknown option(s) {', '.join(sorted(unknown))}")
    _apply_preset(cls, resolved, source)
    cfg = _construct(cls, resolved, ())
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()  # raises a UserError naming the bad option
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


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (),
                defaults: dict[str, Any] | None = None) -> C:
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


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check/convert one value to the field's annotated type (YAML gives ints for floats etc.)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first member the value fits (e.g. int | str: 224 or "574x868")
            try:
                return _coerce(name, value, option, source)
            except UserError:
                continue
        hint = options[-1]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value in args:
            return value
        choices = [str(a) for a in args]
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise UserError(f"{source}: option {name} must be {listed}, got {value!r}")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
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

def add_config_arguments(parser, what: str = "config") -> None:
    """``key=value`` overrides, ``--config FILE`` and ``--print-config`` on a command's parser."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"{what} overrides (see --print-config)")
    parser.add_argument("--config", help="YAML config file (values are overridden by key=value)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def config_from_args(cls: type[C], args, flags: dict[str, Any] | None = None, config_path: str | None = None,
                     defaults: dict[str, Any] | None = None) -> C:
    """The command's config: class defaults < ``defaults`` < ``--config`` < option flags < ``key=value``.

    ``flags`` maps config keys to the values of the command's own option flags (``None`` = not given).
    """
    overrides = [f"{k}={_flag_text(v)}" for k, v in (flags or {}).items() if v is not None]
    overrides += list(getattr(args, "overrides", None) or [])
    return load_config(cls, config_path or getattr(args, "config", None), overrides, defaults)


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
    out: dict[str, Any] = {}
    for path in leaf_paths(cls):
        node = cfg
        for part in path:
            node = getattr(node, part)
        out[best[path]] = _plain(node)
    return out
