"""``nas select RUN``: DARTS-PT's selection on a search that has already finished.

The search's config and checkpoint rebuild its supernet as it ended, then
:func:`nas.search.perturbation.select_by_perturbation` derives the genotype from what each
op is worth to it. A P-DARTS run is selected on its last stage, whose supernet mixed only
the ops the earlier stages kept (``stages.json``); that mask is restored with it, so the
pruned ops, which weighed 0 in the search, weigh 0 in the selection too.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from nas.config import load_config
from nas.errors import ConfigError
from nas.genotype import save_genotype
from nas.plots import plot_genotype
from nas.run import RunDir, atomic_write_text
from nas.runtime import open_run
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.perturbation import select_by_perturbation
from nas.search.progressive import stage_dir

__all__ = ["select_run", "stage_mask"]


def stage_mask(stages: list[dict], stage: int, ops: tuple[str, ...]
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (normal, reduce) op mask stage ``stage`` of a P-DARTS run searched with: the ops
    kept after the stage before (``stages.json``); ``None`` for the first stage (all ops)."""
    if stage == 0:
        return None
    kept = stages[stage - 1]["kept_after"]
    index = {op: i for i, op in enumerate(ops)}
    masks = []
    for cell in ("normal", "reduce"):
        mask = torch.zeros(len(kept[cell]), len(ops), dtype=torch.bool)
        for edge, names in enumerate(kept[cell]):
            mask[edge, [index[n] for n in names]] = True
        masks.append(mask)
    return masks[0], masks[1]


def _searched_folder(path: Path, overrides: list[str]
                     ) -> tuple[SearchConfig, Path, tuple[torch.Tensor, torch.Tensor] | None,
                                float]:
    """The config, folder, op mask and skip dropout of the supernet to select on."""
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a search run folder (needs config.yaml and "
                          f"{RunDir.CHECKPOINT})")
    top = load_config(SearchConfig, str(path / "config.yaml"), [])
    layers = top.progressive.layers
    if not layers:
        if not (path / RunDir.CHECKPOINT).is_file():
            raise ConfigError(f"{path}: not a search run folder (needs config.yaml and "
                              f"{RunDir.CHECKPOINT})")
        cfg = load_config(SearchConfig, str(path / "config.yaml"),
                          [*overrides, "select.method=perturbation", f"run_dir={path}"])
        return cfg, path, None, 0.0
    stages_file = path / "stages.json"
    stages = json.loads(stages_file.read_text()) if stages_file.is_file() else []
    last = len(layers) - 1
    stage = path / stage_dir(last)
    if len(stages) < len(layers) or not (stage / RunDir.CHECKPOINT).is_file():
        raise ConfigError(f"{path}: the P-DARTS search has finished {len(stages)} of "
                          f"{len(layers)} stages; finish it first (nas search)")
    cfg = load_config(SearchConfig, str(stage / "config.yaml"),
                      [*overrides, "select.method=perturbation", f"run_dir={stage}"])
    mask = stage_mask(stages, last, cfg.space.build().ops)
    return cfg, stage, mask, top.progressive.skip_dropout[last]


def select_run(run_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """DARTS-PT on a finished search folder: ``select.*`` from ``overrides``; writes
    ``genotype_pt.yaml``/``.txt``/plots and ``selection.json`` into ``run_dir`` (for a
    P-DARTS run: the top folder, selected on its last stage) and returns the yaml's path.
    ``genotype.yaml`` stays as the search wrote it."""
    path = Path(run_dir)
    cfg, searched, mask, skip_dropout = _searched_folder(path, list(overrides or []))
    with contextlib.ExitStack() as stack:
        if searched != path:  # P-DARTS: hold the top folder too, as its search did
            stack.enter_context(open_run(cfg.name, str(path), "search"))
        run = stack.enter_context(open_run(cfg.name, str(searched), "search"))
        ckpt = run.load_checkpoint(map_location="cpu")
        # the stage's skip dropout only shapes its modules (as in its checkpoint); the
        # selection's accuracies and tuning run without it
        job = SearchJob(cfg, run, op_mask=mask, skip_dropout=skip_dropout)
        job.load_state_dict(ckpt["job"])
        if skip_dropout > 0:
            job.model.set_skip_dropout(0.0)
        if ckpt.get("epoch", 0) < cfg.optim.epochs and not job.should_stop():
            raise ConfigError(f"{searched}: the search stopped at epoch {ckpt.get('epoch')} "
                              f"of {cfg.optim.epochs}; finish it first (nas search)")
        guard = cfg.skip_guard
        argmax = job.model.genotype(guard.max_skips, guard.max_param_free)
        genotype = select_by_perturbation(job, run, argmax)
        save_genotype(genotype, path / "genotype_pt.yaml")
        atomic_write_text(path / "genotype_pt.txt", str(genotype) + "\n")
        plot_genotype(genotype, path, stem="genotype_pt")
        if searched != path:  # the record beside the genotype it explains
            atomic_write_text(path / "selection.json",
                              (searched / "selection.json").read_text())
    return path / "genotype_pt.yaml"
