"""Config names on the command line: a file path, or a config shipped in ``nas.configs``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nas.errors import ConfigError

__all__ = ["resolve_config", "shipped_configs"]


def resolve_config(config: str, kind: str) -> Path:
    """A file path, or the stem of a config shipped under ``nas.configs/<kind>/``."""
    path = Path(config)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"config {config!r} is not a file")
    if path.suffix in (".yaml", ".yml", ".json") or len(path.parts) > 1:
        # A path, not a shipped name: never substitute the shipped config of that stem.
        raise ConfigError(f"config file {config!r} does not exist")
    shipped = resources.files("nas.configs").joinpath(kind, f"{path.name}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    available = shipped_configs(kind)
    raise ConfigError(f"config {config!r} not found; shipped {kind} configs: {available}")


def shipped_configs(kind: str) -> list[str]:
    """Names of the configs shipped under ``nas.configs/<kind>/``."""
    folder = resources.files("nas.configs").joinpath(kind)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))
