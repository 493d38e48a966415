"""``nas latency-table``: its parser (built before torch loads, as every parser) and its
command: measure the table a search or mo-search config needs on this machine."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from nas.cli.configs import resolve_config, shipped_configs
from nas.cost.table import DEVICES
from nas.errors import ConfigError

__all__ = ["add_latency_table_parser", "load_any_config", "cmd_latency_table"]

log = logging.getLogger("nas")

_DOC = ("time every candidate op at the shapes a search or mo-search config needs, on this "
        "machine; writes a latency table for cost.table= / latency.table=")


def add_latency_table_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``nas latency-table`` subcommand (its handler: :func:`cmd_latency_table`)."""
    p = subparsers.add_parser(
        "latency-table", help=_DOC, description=_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("example: nas latency-table quick --kind search --device cpu --out lut.json\n"
                "then, on any machine: nas search quick cost.metric=latency cost.weight=0.1 "
                "cost.table=lut.json\n"
                "options go before CONFIG or after the last key=value override"),
    )
    p.add_argument("config", help="search or mo-search config (file or shipped name)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    p.add_argument("--kind", choices=["auto", "search", "mo"], default="auto",
                   help="config kind (auto: by its keys; needed for a name shipped as both)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cpu/cuda: PyTorch; onnxruntime: ONNX Runtime CPU session (default cpu)")
    p.add_argument("--out", default="lut.json", help="table file to write (default lut.json)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the config's cost.batch_size / latency.batch_size)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per op (20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards per op (5)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch and ONNX Runtime; default: torch's)")
    p.set_defaults(func=cmd_latency_table)
    return p


def _is_top_level_unknown(exc: ConfigError) -> bool:
    text = str(exc)
    return text.startswith("unknown key '") and "." not in text.split("'")[1]


def load_any_config(config: str, overrides: list[str], kind: str = "auto"
                    ) -> tuple[str, Any, Path]:
    """``("search"|"mo", config, path)``: ``auto`` tries a search config, then an
    mo-search one, and asks for ``--kind`` when a shipped name is both."""
    from nas.config import load_config
    from nas.search.config import SearchConfig
    from nas.search.mo.trial import MOConfig

    classes: dict[str, type] = {"search": SearchConfig, "mo": MOConfig}
    if kind != "auto":
        path = resolve_config(config, kind)
        return kind, load_config(classes[kind], path, overrides), path
    if Path(config).is_file():
        paths = {k: Path(config) for k in classes}
    else:
        paths, errors = {}, []
        for k in classes:
            try:
                paths[k] = resolve_config(config, k)
            except ConfigError as exc:
                errors.append(exc)
        if not paths and str(errors[0]) == str(errors[-1]):  # a path, not a shipped name
            raise errors[0]
        if not paths:
            raise ConfigError(f"config {config!r} not found; shipped search configs: "
                              f"{shipped_configs('search')}, mo-search configs: "
                              f"{shipped_configs('mo')}") from errors[0]
        if len(paths) > 1:
            raise ConfigError(f"{config!r} is both a shipped search and mo-search config: pass "
                              "--kind search or --kind mo")
    failures: list[ConfigError] = []
    for k, path in paths.items():
        try:
            return k, load_config(classes[k], path, overrides), path
        except ConfigError as exc:
            failures.append(exc)
    real = [e for e in failures if not _is_top_level_unknown(e)]
    if real:
        raise real[0]
    raise ConfigError(f"{config}: neither a search config ({failures[0]}) nor an mo-search "
                      f"config ({failures[-1]})")


def cmd_latency_table(args: argparse.Namespace) -> int:
    """Measure the table a config needs on this machine and write it to ``--out``."""
    import torch

    from nas.cost.lookup import build_table
    from nas.cost.onnx import require_onnxruntime
    from nas.search.latency_table import data_shape, search_requirements
    from nas.search.mo.trial import mo_requirements

    for name, low in (("batch", 1), ("repeats", 1), ("warmup", 0), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name} must be >= {low}, got {value}")
    kind, cfg, path = load_any_config(args.config, list(args.overrides), args.kind)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    if args.device == "onnxruntime":
        require_onnxruntime("--device onnxruntime")  # a one-line hint before any work
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'lut.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create its folder ({exc.strerror or exc})"
                          ) from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape, classes = data_shape(cfg.data)
    if kind == "search":
        ops, parts = search_requirements(cfg, shape, classes), set()
        batch = cfg.cost.batch_size if args.batch is None else args.batch
    else:
        ops, parts = mo_requirements(cfg, shape, classes)
        batch = cfg.latency.batch_size if args.batch is None else args.batch
    log.info("latency table for %s config %s: %d op/shape pairs and %d fixed parts on %s "
             "(batch %d, %d threads, %d repeats)", kind, path, len(ops), len(parts),
             args.device, batch, torch.get_num_threads(), args.repeats)
    meta = {"config": str(path), "config_kind": kind, "overrides": list(args.overrides),
            "image": list(shape), "num_classes": classes}
    table = build_table(ops, parts, args.device, batch, args.warmup, args.repeats, meta,
                        progress=not getattr(args, "quiet", False))
    table.save(out)
    total = sum(table.ops.values()) + sum(table.parts.values())
    log.info("wrote %s: %d entries, %d fixed parts (%.1f ms in all)", out, len(table.ops),
             len(table.parts), total)
    print(out)
    return 0
