"""``nas`` command line: one function per subcommand, each calling the public API.

Every command takes a YAML config (a path, or the name of a config shipped in
``nas.configs``) plus ``key=value`` overrides. Errors in user input print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from nas.errors import ConfigError, NasError

__all__ = ["main", "resolve_config"]

log = logging.getLogger("nas")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("nas")
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def resolve_config(config: str, kind: str) -> Path:
    """A file path, or the stem of a config shipped under ``nas.configs/<kind>/``."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = resources.files("nas.configs").joinpath(kind, f"{path.stem}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    available = sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("nas.configs").joinpath(kind).iterdir()
        if p.name.endswith(".yaml")
    )
    raise ConfigError(f"config {config!r} not found; shipped {kind} configs: {available}")


def cmd_search(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.search.darts import SearchConfig, run_search

    cfg = load_config(SearchConfig, resolve_config(args.config, "search"), args.overrides)
    result = run_search(cfg)
    print(f"genotype: {result.genotype}")
    print(f"written to {result.run_dir / 'genotype.yaml'}")
    return 0


def cmd_mo_search(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.search.trial import MOConfig

    cfg = load_config(MOConfig, resolve_config(args.config, "mo"), args.overrides)
    if cfg.driver == "ray":
        from nas.search.mo_ray import run_ray_search

        run_ray_search(cfg)
    else:
        from nas.search.mo_optuna import run_mo_search

        run_mo_search(cfg)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.retrain import TrainConfig, run_train

    cfg = load_config(TrainConfig, resolve_config(args.config, "train"), args.overrides)
    for result in run_train(cfg):
        acc = "n/a" if result.test_acc is None else f"{100 * result.test_acc:.2f}%"
        print(f"{result.run_dir}: test accuracy {acc}, {result.params / 1e6:.3f} M params")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from nas.evaluate.deploy import deploy_run

    if args.overrides:
        raise ConfigError("deploy takes a run folder only")
    report = deploy_run(args.config)
    print(f"deploy check: max |diff| {report['max_abs_diff']:.3g} on held-out images")
    keys = list(report["train_form"])
    print(f"{'':14s}" + "".join(f"{k:>22s}" for k in keys))
    for form in ("train_form", "deploy_form"):
        values = "".join(f"{report[form][k]:>22.4g}" for k in keys)
        print(f"{form:14s}{values}")
    print(f"written to {Path(args.config) / 'deploy.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.evaluate.compare import CompareConfig, run_compare

    cfg = load_config(CompareConfig, resolve_config(args.config, "compare"), args.overrides)
    run_compare(cfg)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.quickstart import QuickstartConfig, run_quickstart

    overrides = ([args.config] if args.config else []) + args.overrides
    run_quickstart(load_config(QuickstartConfig, None, overrides))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nas.baselines import BASELINES, resolve_genotype
    from nas.genotype import plot_genotype

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = args.genotype.strip()
    genotype = resolve_genotype(spec)
    stem = spec if spec in BASELINES else Path(spec).stem if Path(spec).is_file() else "genotype"
    for path in plot_genotype(genotype, out, stem=stem, fmt=args.format):
        print(path)
    return 0


def _add(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], doc: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=doc, description=doc)
    p.add_argument("config", help="YAML config file, or the name of a shipped config")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, "search", cmd_search, "DARTS-style differentiable search; writes a genotype")
    _add(sub, "mo-search", cmd_mo_search, "multi-objective search (Optuna or Ray Tune)")
    _add(sub, "train", cmd_train, "retrain a genotype (DARTS evaluation recipe by default)")
    p = sub.add_parser("deploy", help="convert a trained run to deploy form, verify, measure")
    p.add_argument("config", metavar="RUN", help="a finished `nas train` run folder")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("plot", help="plot the cells of a genotype (file, string or baseline)")
    p.add_argument("genotype", help="genotype file, DARTS string or baseline name")
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--format", default="png", choices=["png", "svg", "pdf"])
    p.set_defaults(func=cmd_plot)
    _add(sub, "compare", cmd_compare, "train genotypes under one recipe; table + Pareto plots")
    p = sub.add_parser(
        "quickstart", help="search -> export -> retrain -> compare on the embedded sample"
    )
    p.add_argument("config", nargs="?", default=None, help="optional key=value")
    p.add_argument("overrides", nargs="*", help="key=value (run_dir, search_epochs, ...)")
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
