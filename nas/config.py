"""YAML configs as frozen, validated dataclasses, with ``key=value`` overrides.

The only place that parses YAML config files. Each job (search, train, compare, mo-search)
declares a dataclass tree; :func:`load_config` merges the YAML file and dotted overrides,
rejects unknown keys and wrong types naming the field, and runs ``validate()`` hooks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from nas.errors import ConfigError

__all__ = [
    "load_config",
    "parse_overrides",
    "config_to_dict",
    "dump_config",
    "build",
    "DataConfig",
    "OptimConfig",
    "RuntimeConfig",
    "SSLConfig",
]

T = TypeVar("T")


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "data.name=cifar10"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except (yaml.YAMLError, RecursionError):
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a group")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any], cls: Any = None,
           prefix: str = "") -> dict[str, Any]:
    """``extra`` (overrides) over ``base``; ``cls`` is the dataclass both describe, if known.

    A list of named entries (a ``list[D]`` field, ``D`` a dataclass with a ``name``) takes
    ``FIELD.NAME.KEY=VALUE`` for one entry's key, and ``FIELD.NAME=VALUE`` for the key
    ``D.OVERRIDE_KEY`` names (e.g. ``entries.searched=runs/search/x`` for a compare entry's
    genotype): YAML list items cannot be overridden by position on a command line.
    """
    hints = _hints(cls)
    out = dict(base)
    for key, value in extra.items():
        tp = hints.get(key)
        item = _named_item(tp)
        field = f"{prefix}{key}"
        if item is not None and isinstance(value, Mapping):
            current = out[key] if key in out else _field_default(cls, key)
            if isinstance(current, (list, tuple)):
                out[key] = _merge_named(list(current), value, item, field)
                continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value, _dataclass_of(tp), f"{field}.")
        else:
            out[key] = value
    return out


def _hints(cls: Any) -> dict[str, Any]:
    if cls is None or not dataclasses.is_dataclass(cls):
        return {}
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> Any:
    """The dataclass behind ``tp`` (also inside ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _named_item(tp: Any) -> Any:
    """``D`` when ``tp`` is ``list[D]`` of a dataclass with a ``name`` field, else None."""
    if typing.get_origin(tp) is not list:
        return None
    (item,) = typing.get_args(tp) or (None,)
    if dataclasses.is_dataclass(item) and "name" in {f.name for f in dataclasses.fields(item)}:
        return item
    return None


def _field_default(cls: Any, key: str) -> Any:
    """Plain-data default of field ``key`` of ``cls`` (None when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == key:
            if f.default_factory is not dataclasses.MISSING:
                return config_to_dict(f.default_factory())
            return None if f.default is dataclasses.MISSING else config_to_dict(f.default)
    return None


def _merge_named(entries: list[Any], patch: Mapping[str, Any], item: Any,
                 field: str) -> list[Any]:
    """``patch`` (entry name -> value or mapping) applied to the entries of that name."""
    names = [str(e.get("name")) if isinstance(e, Mapping) else None for e in entries]
    out = list(entries)
    for name, value in patch.items():
        if str(name) not in names:
            listed = ", ".join(n for n in names if n is not None) or "none"
            raise ConfigError(f"override {field}.{name}: no entry named {name!r} "
                              f"(entries: {listed})")
        i = names.index(str(name))
        if not isinstance(value, Mapping):
            short = getattr(item, "OVERRIDE_KEY", None)
            if short is None:
                raise ConfigError(f"override {field}.{name}: set one key, "
                                  f"{field}.{name}.KEY=VALUE")
            value = {short: value}
        if "name" in value and str(value["name"]) != str(name):
            raise ConfigError(f"override {field}.{name}.name: an entry cannot be renamed "
                              "from the command line")
        out[i] = _merge(dict(entries[i]), value, item, f"{field}.{name}.")
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, field: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{field}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{field}: got {value!r}, expected one of {allowed}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{field}: expected a mapping, got {value!r}")
        return build(tp, value, prefix=f"{field}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{field}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args))
            return tuple(_coerce(v, a, f"{field}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{field}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{field}: number too large ({len(str(value))} digits)") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{field}: unsupported type {_type_name(tp)}")


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping: unknown keys and bad types name the field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        known = ", ".join(sorted(fields))
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown key {key!r} (known: {known})")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_config(cfg: Any) -> str:
    """Resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> T:
    """Load ``path`` (YAML mapping) into ``cls``, apply dotted ``key=value`` overrides.

    The config's ``name`` defaults to the file stem, so runs land in ``runs/<name>``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{path}: not valid YAML ({first})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = dict(loaded)
        if "name" in {f.name for f in dataclasses.fields(cls)}:
            data.setdefault("name", path.stem)
    data = _merge(data, parse_overrides(overrides), cls)
    return build(cls, data)


# Config groups shared by every job --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, how it is batched and augmented.

    ``name``: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``fashion_mnist_sample``
    (embedded, offline), ``synthetic``, ``npz:PATH`` or ``imagefolder:PATH``.
    ``options`` go to the loader (e.g. ``num_samples`` for synthetic).
    """

    name: str = "cifar10"
    root: str | None = None
    download: bool = True
    batch_size: int = 64
    eval_batch_size: int = 256
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    limit: int | None = None
    test_limit: int | None = None
    portion: float = 0.5
    options: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"data.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.cutout < 0:
            raise ConfigError(f"data.cutout must be >= 0, got {self.cutout}")
        if not 0.0 < self.portion < 1.0:
            raise ConfigError(f"data.portion must be in (0, 1), got {self.portion}")
        for key in ("limit", "test_limit"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """SGD with cosine annealing, as in the DARTS recipes."""

    epochs: int = 50
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"optim.epochs must be >= 0, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


#: torch.compile modes (``torch._inductor.list_mode_options``); "reduce-overhead" adds CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a job runs."""

    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    amp: bool = True
    # None: the layout measured faster for the job (benchmarks/train.py --variants,
    # benchmarks/fused.py, benchmarks/peers.py): channels_last for retraining on CPU;
    # NCHW for searches, and on CUDA until measured there (gpu_check.sh times both).
    channels_last: bool | None = None
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" replays each compiled step as a CUDA graph
    # (static shapes: training loaders drop their partial last batch); None: torch's default
    compile_mode: str | None = None
    compile_backend: str = "inductor"  # e.g. "aot_eager": compiles fast, no C++ needed
    progress: bool = True
    log_interval: int = 20
    threads: int | None = None  # torch CPU threads; None: the free cores (nas.threads)
    # Under torchrun (nas.distributed): BatchNorm statistics over the global batch instead of
    # each rank's shard (CUDA only), and how long a collective may wait for a silent peer.
    sync_bn: bool = False
    tensorboard: bool = True  # TensorBoard event files in the run folder (nas.tensorboard)
    dist_timeout: float = 1800.0  # seconds

    def use_channels_last(self, device: Any, cpu_default: bool = False) -> bool:
        """``channels_last`` resolved for a ``torch.device`` or name: unset, it is
        ``cpu_default`` on CPU (the job's measured faster layout) and off elsewhere."""
        if self.channels_last is not None:
            return self.channels_last
        kind = getattr(device, "type", None) or str(device).split(":")[0]
        return cpu_default and kind == "cpu"

    def validate(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"runtime.threads must be >= 1 or null, got {self.threads}")
        if not 0 < self.dist_timeout <= 1e6:
            raise ConfigError(
                f"runtime.dist_timeout must be in (0, 1e6] seconds, got {self.dist_timeout}"
            )
        if self.log_interval < 1:
            raise ConfigError(f"runtime.log_interval must be >= 1, got {self.log_interval}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ConfigError(
                f"runtime.compile_mode must be one of {', '.join(COMPILE_MODES)} or null, "
                f"got {self.compile_mode!r}"
            )
        if self.compile_mode is not None and not self.compile:
            raise ConfigError("runtime.compile_mode needs runtime.compile=true")


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    """Sparse-shift displacement penalty λ·R(α, β) (OPERATORS.md: L2, no ½, by default).

    ``freeze_at``: fraction of training after which the displacements stop changing (the
    paper fixes them for its last 16k of 64k iterations: 0.75); ``None`` never freezes.
    Frozen from epoch ``ceil(freeze_at * epochs)`` on (:func:`nas.ops.ssl.apply_shift_freeze`).
    """

    penalty: float = 1e-4
    norm: Literal["l1", "l2"] = "l2"
    freeze_at: float | None = None

    def validate(self) -> None:
        if self.freeze_at is not None and not 0.0 < self.freeze_at <= 1.0:
            raise ConfigError(f"ssl.freeze_at must be in (0, 1] or null, got {self.freeze_at}")
