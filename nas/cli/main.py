"""``nas`` command line: one function per subcommand, each calling the public API.

Every command takes a YAML config (a path, or the name of a config shipped in
``nas.configs``) plus ``key=value`` overrides. Errors in user input print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from nas import __version__
from nas.cli.configs import resolve_config, shipped_configs
from nas.errors import ConfigError, NasError
from nas.threads import prefer_passive_waiting

__all__ = ["main", "build_parser"]

log = logging.getLogger("nas")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    """Progress lines on stderr: INFO, DEBUG with ``-v``, none with ``-q`` (log.txt keeps all)."""
    logger = logging.getLogger("nas")
    handler = next((h for h in logger.handlers if isinstance(h, _TqdmHandler)), None)
    if handler is None:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    handler.setLevel(logging.ERROR if quiet else logging.NOTSET)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def cmd_search(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.search.config import SearchConfig
    from nas.search.darts import run_search

    cfg = load_config(SearchConfig, resolve_config(args.config, "search"), args.overrides)
    if cfg.seeds:  # one search per seed (single process), then the summary
        from nas.search.seeds import multi_seed_dir, run_search_seeds

        for result in run_search_seeds(cfg):
            print(result.run_dir / "genotype.yaml")
        print(multi_seed_dir(cfg) / "summary.md")
        return 0
    result = run_search(cfg)  # logs the genotype; stdout gets its file, for scripts
    from nas.distributed import is_main_process

    if is_main_process():  # under torchrun every rank returns the result; one prints it
        print(result.run_dir / "genotype.yaml")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from nas.search.select import select_run

    _single_process("select")
    print(select_run(args.run, args.overrides))
    return 0


def _single_process(command: str) -> None:
    """mo-search, compare and quickstart run whole jobs one after another: not under torchrun."""
    from nas.distributed import launched

    if launched():
        raise ConfigError(f"nas {command} runs in one process: start it without torchrun "
                          "(nas search and nas train run data parallel)")


def cmd_mo_search(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.search.mo.trial import MOConfig

    _single_process("mo-search")
    cfg = load_config(MOConfig, resolve_config(args.config, "mo"), args.overrides)
    if cfg.driver == "ray":
        from nas.search.mo.ray_driver import run_ray_search

        run_ray_search(cfg)
    else:
        from nas.search.mo.optuna_driver import run_mo_search

        run_mo_search(cfg)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.evaluate.train import TrainConfig, run_train

    cfg = load_config(TrainConfig, resolve_config(args.config, "train"), args.overrides)
    results = run_train(cfg)
    from nas.distributed import is_main_process

    if not is_main_process():  # under torchrun: rank 0 reports
        return 0
    for result in results:
        if result.val_acc is not None:
            what, value = "val accuracy (holdout)", result.val_acc
        else:
            what, value = "test accuracy", result.test_acc
        acc = "n/a" if value is None else f"{100 * value:.2f}%"
        print(f"{result.run_dir}: {what} {acc}, {result.params / 1e6:.3f} M params")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from nas.evaluate.deploy_report import deploy_run

    if args.overrides:
        raise ConfigError("deploy takes a run folder only")
    report = deploy_run(args.config)
    print(f"deploy check: max |diff| {report['max_abs_diff']:.2e} on held-out images")
    print(format_deploy_table(report))
    print(f"written to {Path(args.config) / 'deploy.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nas.evaluate.export import DEFAULT_OPSET, ExportError, export_run, format_export_table

    try:
        report = export_run(
            args.run, args.format, args.out,
            opset=DEFAULT_OPSET if args.opset is None else args.opset,
            onnx_exporter=args.onnx_exporter,
            atol=args.atol, rtol=args.rtol, check_batch=args.check_batch,
            latency_batches=(1, args.latency_batch),
        )
    except ExportError as exc:  # the export is wrong, not the input: status 1, not 2
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    print(format_export_table(report))
    folder = Path(args.out) if args.out else Path(args.run) / "export"
    print(f"written to {folder / 'export.json'}")
    return 0


def _plain_number(value: float | int) -> str:
    """Thousands separators for counts, 3 decimals for measurements; never e-notation."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}"


def format_deploy_table(report: dict) -> str:
    """Training form vs deploy form, one column per measure (params, bytes, MACs, ms)."""
    keys = list(report["train_form"])
    width = max(14, *(len(k) + 2 for k in keys))
    rows = [f"{'':12s}" + "".join(f"{k:>{width}s}" for k in keys)]
    for form in ("train_form", "deploy_form"):
        values = "".join(f"{_plain_number(report[form][k]):>{width}s}" for k in keys)
        rows.append(f"{form:12s}{values}")
    return "\n".join(rows)


def cmd_compare(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.evaluate.compare import CompareConfig, run_compare

    _single_process("compare")
    cfg = load_config(CompareConfig, resolve_config(args.config, "compare"), args.overrides)
    run_compare(cfg)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from nas.cli.quickstart import QuickstartConfig, run_quickstart
    from nas.config import load_config

    _single_process("quickstart")
    overrides = ([args.config] if args.config else []) + args.overrides
    run_quickstart(load_config(QuickstartConfig, None, overrides))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nas.plots import plot_genotype
    from nas.spaces.baselines import BASELINES, resolve_genotype

    spec = args.genotype.strip()
    genotype = resolve_genotype(spec)  # before --out is created: a bad genotype leaves nothing
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create folder ({exc.strerror or exc})") from None
    baseline = spec.upper().replace("-", "_")
    stem = baseline if baseline in BASELINES else (
        Path(spec).stem if Path(spec).is_file() else "genotype")
    for path in plot_genotype(genotype, out, stem=stem, fmt=args.format):
        print(path)
    return 0


#: (shipped config folder, example) per command that takes a config
_EXAMPLES = {
    "search": ("search", "nas search quick optim.epochs=1 run_dir=runs/try"),
    "mo-search": ("mo", "nas mo-search quick n_trials=4"),
    "train": ("train", "nas train quick model.genotype=DARTS_V2"),
    "compare": ("compare", "nas compare quick seeds=[0,1]"),
}


def _epilog(name: str) -> str | None:
    if name not in _EXAMPLES:
        return None
    kind, example = _EXAMPLES[name]
    return (f"shipped configs: {', '.join(shipped_configs(kind))}\n"
            f"example: {example}\n"
            f"runs go to runs/{name}/<config name>/ unless run_dir=PATH is given")


def _add(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], doc: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=doc, description=doc, epilog=_epilog(name),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file, or the name of a shipped config")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress or warnings on stderr, errors only"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, "search", cmd_search, "DARTS-style differentiable search; writes a genotype")
    _add(sub, "mo-search", cmd_mo_search, "multi-objective search (Optuna or Ray Tune)")
    p = sub.add_parser(
        "select", help="DARTS-PT perturbation selection on a finished search folder",
        description="Re-derive a finished `nas search` folder's genotype by DARTS-PT (Wang "
        "et al., ICLR 2021): per edge the op whose removal costs the most validation "
        "accuracy, with weight tuning between decisions. Writes RUN/genotype_pt.yaml and "
        "RUN/selection.json; RUN/genotype.yaml stays.",
        epilog="example: nas select runs/search/quick select.tune_steps=20",
    )
    p.add_argument("run", metavar="RUN", help="a finished `nas search` run folder")
    p.add_argument("overrides", nargs="*",
                   help="select.* (tune_epochs, tune_steps, eval_batches, topology), runtime.*")
    p.set_defaults(func=cmd_select)
    from nas.cli.latency_table import add_latency_table_parser  # torch-free import

    add_latency_table_parser(sub)
    from nas.evaluate.report import add_report_parser  # torch-free import

    add_report_parser(sub)
    _add(sub, "train", cmd_train, "retrain a genotype (DARTS evaluation recipe by default)")
    p = sub.add_parser("deploy", help="convert a trained run to deploy form, verify, measure")
    p.add_argument("config", metavar="RUN", help="a finished `nas train` run folder")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser(
        "export", help="export a trained run's deploy form (ONNX, TorchScript, torch.export)",
        description="Export the deploy form of a finished `nas train` run, reload it, check it "
        "against PyTorch on held-out images (two batch sizes) and time it. Exit 1 when an "
        "export fails or does not match (nothing is written), 2 on bad input.",
    )
    p.add_argument("run", metavar="RUN", help="a finished `nas train` run folder")
    p.add_argument("--format", default="onnx",
                   help="onnx, torchscript, exported, comma-separated, or all (default: onnx)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/export)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    p.add_argument("--onnx-exporter", default="auto",
                   help="auto (TorchScript-based, dynamo if it fails), torchscript or dynamo")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (1e-3)")
    p.add_argument("--check-batch", type=int, default=64, help="held-out images checked (64)")
    p.add_argument("--latency-batch", type=int, default=32,
                   help="larger batch timed besides batch 1 (32)")
    p.set_defaults(func=cmd_export)
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so runs stop the way Ctrl-C stops them."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prefer_passive_waiting()  # before torch loads OpenMP
    _setup_logging(args.verbose, args.quiet)
    quiet_bars = args.quiet and "TQDM_DISABLE" not in os.environ
    if quiet_bars:  # -q: no progress bars either (tqdm reads TQDM_DISABLE at each bar)
        os.environ["TQDM_DISABLE"] = "1"
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return args.func(args)
    except NasError as exc:
        one_line = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # e.g. a key with a newline
        print(f"error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; re-run the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if quiet_bars:
            del os.environ["TQDM_DISABLE"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
