"""DARTS bilevel search (first/second order, PC-DARTS options, cost-aware term).

``run_search(cfg)`` is what ``nas search CONFIG`` calls: it builds the supernet over the
configured space, alternates architecture and weight steps through the shared epoch loop
(:func:`nas.loop.fit`), and writes the derived genotype, its plots and the α history.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas import distributed
from nas.config import dump_config
from nas.data import holdout_split, search_split
from nas.errors import ConfigError
from nas.genotype import Genotype, save_genotype
from nas.loop import fit, seed_everything, sgd_cosine
from nas.ops import clamp_bdsc_, ssl_penalty
from nas.ops.ssl import apply_shift_freeze, shift_freeze_epoch
from nas.plots import plot_alphas, plot_genotype
from nas.run import RunDir, atomic_write_text
from nas.runtime import (
    autocast,
    check_device,
    compile_module,
    load_splits,
    make_loader,
    open_run,
    setup_threads,
)
from nas.search.architect import Architect
from nas.search.config import ProgressiveConfig, SearchConfig, check_search_runtime
from nas.search.cost import BETA_WITH_COST, cost_tensor
from nas.search.diagnostics import (
    edge_margins,
    eigenvalue_stop,
    hessian_eigenvalue,
    param_free_share,
)
from nas.search.perturbation import select_by_perturbation
from nas.search.progressive import prune_ops, skip_dropout_rate, stage_dir
from nas.search.stabilizers import (
    RS_EPSILON_START,
    beta_regularizer,
    dirichlet_kl,
    ramp,
    rs_noise,
)
from nas.search.supernet.model import Supernet
from nas.tensorboard import alpha_entropy

__all__ = ["SearchJob", "SearchResult", "run_search"]

log = logging.getLogger("nas")


class SearchJob:
    """A DARTS search as a :class:`nas.loop.Job`.

    Under torchrun (:mod:`nas.distributed`) each rank steps on its shard of every global
    batch; weight and architecture gradients are averaged over the ranks, so weights and
    α stay identical on all of them; BN statistics are per rank (averaged at each epoch's
    end): ``runtime.sync_bn`` is refused (:data:`SYNC_BN_REFUSED`).

    A step makes no host sync in any mode (first/second order, partial channels, edge
    normalization, cost term, SSL penalty; fused or reference): ``tests/search/
    test_host_syncs.py`` counts them.
    """

    def __init__(self, cfg: SearchConfig, run: RunDir, *,
                 op_mask: tuple[torch.Tensor, torch.Tensor] | None = None,
                 skip_dropout: float = 0.0) -> None:
        """``op_mask`` (normal, reduce) and ``skip_dropout``: a P-DARTS stage's kept ops
        and skip dropout (:mod:`nas.search.progressive`)."""
        check_search_runtime(cfg.runtime)  # configs made without build() skip validate()
        self.cfg = cfg
        self.run = run
        self.world = distributed.current()
        self.device = check_device(cfg.runtime.device)
        seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)
        with distributed.main_first("rank 0 to load the data"):  # one download, not N
            train_full, _ = load_splits(cfg.data, test=False)
        if cfg.holdout is not None:  # never seen by the search, weights nor α
            train_full, _ = holdout_split(train_full, cfg.holdout, cfg.holdout_seed)
        setup_threads(cfg.runtime)  # after the data: a bad dataset fails before any warning
        train, val = search_split(train_full, cfg.data.portion, seed=cfg.runtime.seed)
        # NCHW unless asked: channels_last made the 13-op step slower on CPU (benchmarks/peers.py)
        self.channels_last = cfg.runtime.use_channels_last(self.device, cpu_default=False)
        layout = {"channels_last": self.channels_last}
        self.train_loader = make_loader(train, cfg.data, cfg.runtime, self.device, train=True,
                                        **layout)
        self.val_loader = make_loader(
            val, cfg.data, cfg.runtime, self.device, train=True, seed_offset=1, **layout
        )
        self.eval_loader = make_loader(val, cfg.data, cfg.runtime, self.device, train=False,
                                       **layout)
        # evaluation sees every image: a last batch of another size (see evaluate)
        self._eval_uneven = len(val) % cfg.data.eval_batch_size != 0
        self.space = cfg.space.build()
        C, H, W = train_full.shape
        self.model = Supernet(
            self.space,
            train_full.num_classes,
            cfg.model.init_channels,
            cfg.model.layers,
            in_channels=C,
            stem_multiplier=cfg.model.stem_multiplier,
            partial_k=cfg.model.partial_channels,
            edge_norm=cfg.model.edge_norm,
            fused=cfg.model.fused,
            aux_skip=cfg.stabilize.aux_skip,
            dirichlet=cfg.stabilize.dirichlet,
            skip_dropout=skip_dropout > 0,
        ).to(self.device)
        if op_mask is not None:
            self.model.set_op_mask(*(m.to(self.device) for m in op_mask))
        self._skip_dropout = skip_dropout
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world.distributed:
            distributed.broadcast_module_(self.model)  # same start on every rank
            distributed.seed_rank(cfg.runtime.seed)
        compile_module(  # in place: every call of the model runs compiled code
            self.model, self.device, cfg.runtime.compile,
            mode=cfg.runtime.compile_mode, backend=cfg.runtime.compile_backend,
        )
        # walked once, not three times a step; compile() is in place: the same objects
        self.weights = self.model.weight_parameters()
        self.w_optimizer, self.scheduler = sgd_cosine(self.model, self.weights, cfg.optim)
        self.architect = Architect(self.model, cfg.arch)
        self.cost = cost_tensor(cfg.cost, self.model, (H, W), self.device)
        if self.cost is not None and cfg.stabilize.beta > 0:
            log.warning(BETA_WITH_COST, cfg.stabilize.beta)
        self.alpha_history: list[dict[str, Any]] = []
        self._warmup = cfg.arch.warmup(cfg.optim.epochs)
        # the architecture parameters at the end of the last eig_window + 1 epochs: where
        # R-DARTS's early stop derives from (epoch i - k)
        self._arch_snapshots: list[list[torch.Tensor]] = []
        self._eigenvalues: list[float] = []
        self._beta = self._rs_epsilon = 0.0  # set per epoch in start_epoch
        self._stop = False
        self._epoch = 0
        self._val_iter = iter(())

    # Job protocol -----------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self.train_loader.set_epoch(epoch)
        self.val_loader.set_epoch(epoch)
        # SSL shifts learn until epoch ceil(freeze_at * epochs), then stay fixed (the paper's
        # last phase); recomputed every epoch so a resumed search does the same.
        if apply_shift_freeze(self.model, epoch, self.cfg.optim.epochs, self.cfg.ssl.freeze_at):
            if epoch == shift_freeze_epoch(self.cfg.optim.epochs, self.cfg.ssl.freeze_at):
                log.info("SSL shifts frozen from epoch %d on", epoch + 1)
        self._val_iter = iter(self.val_loader)
        self.model.train()
        stab, epochs = self.cfg.stabilize, self.cfg.optim.epochs
        self._beta = ramp(stab.beta, epoch, epochs)  # β-DARTS λ of this epoch
        self._rs_epsilon = (ramp(stab.rs_epsilon, epoch, epochs, RS_EPSILON_START)
                            if stab.rs_epsilon > 0 else 0.0)
        if stab.aux_skip:  # DARTS-'s β: 1 -> 0 (in place: a compiled forward reads it)
            self.model.aux_skip_beta.fill_(ramp(0.0, epoch, epochs, start=1.0))
        if self._skip_dropout > 0:  # P-DARTS
            self.model.set_skip_dropout(
                skip_dropout_rate(self._skip_dropout, epoch, epochs, self._warmup))

    def batches(self):
        return self.train_loader

    def num_batches(self) -> int:
        return len(self.train_loader)

    def _next_val(self):
        try:
            return next(self._val_iter)
        except StopIteration:
            self._val_iter = iter(self.val_loader)
            return next(self._val_iter)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y)
        if self.cfg.ssl.penalty > 0:
            loss = loss + self.cfg.ssl.penalty * ssl_penalty(self.model, self.cfg.ssl.norm)
        return loss

    def _cost_term(self) -> torch.Tensor:
        """What the architecture loss adds to the validation loss: the expected cost (λ·Σ
        op_weights·cost), β-DARTS's regularizer and DrNAS's KL term."""
        terms = []
        if self.cost is not None:
            terms.append(self.cfg.cost.weight * self.model.expected_cost(self.cost))
        alphas = [self.model.alphas_normal, self.model.alphas_reduce]
        if self._beta > 0:
            terms.append(self._beta * beta_regularizer(alphas))
        stab = self.cfg.stabilize
        if stab.dirichlet and stab.dirichlet_kl > 0:
            terms.append(stab.dirichlet_kl * dirichlet_kl(alphas))
        if not terms:
            return torch.zeros((), device=self.device)
        return terms[0] if len(terms) == 1 else torch.stack(terms).sum()

    def step(self, batch):
        x, y = batch
        amp = self.cfg.runtime.amp
        if self._epoch >= self._warmup:
            val = self._next_val()
            with autocast(self.device, amp and self.cfg.arch.order == "first"):
                self.architect.step(batch, val, self._loss, self._cost_term, self.w_optimizer)
        noise = None
        if self._rs_epsilon > 0:  # SDARTS-RS: the weight step only
            alphas = {False: self.model.alphas_normal, True: self.model.alphas_reduce}
            noise = rs_noise(alphas, self._rs_epsilon)
        with autocast(self.device, amp):
            logits = self.model(x, noise)
            loss = self._loss(logits, y)
        self.w_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weights)
        distributed.average_grads_(self.weights, y.shape[0])  # before clipping
        nn.utils.clip_grad_norm_(self.weights, self.cfg.optim.grad_clip, foreach=True)
        self.w_optimizer.step()
        clamp_bdsc_(self.model)
        correct = (logits.argmax(1) == y).sum()
        return loss, correct, y.shape[0]

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        n = 0
        for x, y in self.eval_loader:
            if self._eval_uneven:  # a dynamic batch dim from the first call: the partial
                # last batch reuses the compiled eval graph, no second compile (eager: no-op)
                torch._dynamo.maybe_mark_dynamic(x, 0)
            with autocast(self.device, self.cfg.runtime.amp):
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            n += y.shape[0]
        self.model.train()
        if self.world.distributed:  # each rank saw a shard: the whole split's numbers
            totals = torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(n)])
            loss_sum, correct, n = distributed.all_reduce_sum_(totals).tolist()
            return loss_sum / n, correct / n
        return loss_sum.item() / n, correct.item() / n

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        distributed.average_buffers_(self.model)  # one model on every rank from here on
        self.scheduler.step()
        val_loss, val_acc = self.evaluate()
        guard = self.cfg.skip_guard
        genotype = self.model.genotype(guard.max_skips, guard.max_param_free)
        raw = self.model.genotype()
        skips = sum(op == "skip_connect" for op, _ in raw.normal)
        self.alpha_history.append(
            {
                "epoch": epoch,
                "normal": self.model.op_weights(False).tolist(),
                "reduce": self.model.op_weights(True).tolist(),
            }
        )
        limit = self.cfg.skip_guard.stop_at_skips
        if limit is not None and skips >= limit:
            log.info("normal cell derives %d skip connections (>= %d): stopping", skips, limit)
            self._stop = True
        row = {
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.scheduler.get_last_lr()[0],
            "normal_skips": skips,
            "genotype": str(genotype),
            **self._diagnostics(raw, epoch),
        }
        if self.cost is not None:
            row["expected_cost"] = float(self.model.expected_cost(self.cost).detach())
        if self.cfg.ssl.penalty > 0:
            from nas.ops import ssl_sparsity

            row["ssl_sparsity"] = ssl_sparsity(self.model)
        self.run.write_text("alphas.json", json.dumps(self._alpha_doc()))
        return row

    def _diagnostics(self, raw: Genotype, epoch: int) -> dict[str, float]:
        """Collapse diagnostics of this epoch (:mod:`nas.search.diagnostics`), on the
        derivation without guards: what α itself says."""
        row: dict[str, float] = {}
        for cell, reduction, edges in (("normal", False, raw.normal),
                                       ("reduce", True, raw.reduce)):
            weights = self.model.op_weights(reduction).detach()
            margins = edge_margins(weights, self.space.ops)
            row[f"{cell}_param_free"] = param_free_share(edges)
            row[f"{cell}_entropy"] = alpha_entropy(weights.float().cpu().numpy())
            row[f"{cell}_margin_mean"] = float(margins.mean())
            row[f"{cell}_margin_min"] = float(margins.min())
        diag = self.cfg.diagnostics
        if diag.hessian_iters > 0:
            row["hessian_eig"] = self._hessian_eigenvalue(epoch)
            self._eigenvalues.append(row["hessian_eig"])
        if diag.eig_stop:
            self._early_stop_on_curvature(epoch)
        return row

    def _early_stop_on_curvature(self, epoch: int) -> None:
        """R-DARTS's DARTS-ES: keep the last window's α; once the eigenvalue grew too much
        (:func:`eigenvalue_stop`), restore α of ``eig_window`` epochs ago and stop."""
        k = self.cfg.diagnostics.eig_window
        self._arch_snapshots.append([p.detach().cpu().clone()
                                     for p in self.model.arch_parameters()])
        del self._arch_snapshots[: -(k + 1)]
        if not eigenvalue_stop(self._eigenvalues, k, self.cfg.diagnostics.eig_threshold):
            return
        with torch.no_grad():
            for p, saved in zip(self.model.arch_parameters(), self._arch_snapshots[0]):
                p.copy_(saved)
        log.info("R-DARTS early stop at epoch %d: the α Hessian's eigenvalue grew over %d "
                 "epochs by more than 1/%.2f; deriving from epoch %d", epoch + 1, k,
                 self.cfg.diagnostics.eig_threshold, epoch + 1 - k)
        self._stop = True

    def _hessian_eigenvalue(self, epoch: int) -> float:
        """R-DARTS's dominant eigenvalue of ∇²_α L_val on the first validation images, one
        architecture batch of them (the eval batch, often far larger, would hold the whole
        supernet's activations for backward), in training mode as the α step sees the loss
        (DrNAS: at the Dirichlet mean); BN running statistics are restored."""
        x, y = next(iter(self.eval_loader))
        x, y = x[: self.cfg.data.batch_size], y[: self.cfg.data.batch_size]
        alphas = [self.model.alphas_normal, self.model.alphas_reduce]
        buffers = list(self.model.buffers())
        saved = [b.clone() for b in buffers]
        self.model.sample = False  # DrNAS: the loss at the mean weights, not a fresh draw
        try:
            value = hessian_eigenvalue(lambda: self._loss(self.model(x), y), alphas,
                                       self.cfg.diagnostics.hessian_iters, y.shape[0],
                                       seed=self.cfg.runtime.seed + epoch)
        finally:
            self.model.sample = True
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
        return float(value)

    def should_stop(self) -> bool:
        return self._stop

    def log_tensorboard(self, tb, step: int) -> None:
        """This epoch's α entropy and heatmap (called by ``fit`` after ``end_epoch``)."""
        if self.alpha_history:
            tb.alphas(self.space.ops, self.alpha_history[-1], step)

    def _alpha_doc(self) -> dict[str, Any]:
        return {"ops": list(self.space.ops), "history": self.alpha_history}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.architect.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "alpha_history": json.dumps(self.alpha_history),
            "stop": self._stop,
            "eigenvalues": list(self._eigenvalues),
            "arch_snapshots": self._arch_snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.architect.optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.alpha_history = json.loads(state["alpha_history"])
        self._stop = bool(state["stop"])
        self._eigenvalues = [float(v) for v in state.get("eigenvalues", [])]
        self._arch_snapshots = state.get("arch_snapshots", [])


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    run_dir: Path
    epochs: int


def _fit_search(job: SearchJob, run: RunDir, desc: str = "search") -> int:
    cfg = job.cfg
    log.info(
        "%s %s: space %s (%d ops), %d cells, C=%d, K=%d, %s order, device %s",
        desc, cfg.name, job.space.name, len(job.space.ops), cfg.model.layers,
        cfg.model.init_channels, cfg.model.partial_channels, cfg.arch.order, job.device,
    )
    return fit(job, run, cfg.optim.epochs, log_interval=cfg.runtime.log_interval,
               progress=cfg.runtime.progress, desc=desc, tensorboard=cfg.runtime.tensorboard)


def _progressive_stages(cfg: SearchConfig, run: RunDir) -> tuple[SearchJob, int]:
    """P-DARTS: one search per stage in ``run/stage<k>/`` (each resumable), the ops kept
    after each written to ``stages.json``; returns the last stage's job."""
    prog = cfg.progressive
    assert prog.layers is not None
    mask: tuple[torch.Tensor, torch.Tensor] | None = None
    stages: list[dict[str, Any]] = []
    for k, layers in enumerate(prog.layers):
        stage_cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, layers=layers),
            progressive=ProgressiveConfig(), run_dir=str(run.path / stage_dir(k)))
        with open_run(cfg.name, stage_cfg.run_dir, "search") as stage_run:
            stage_run.save_config(dump_config(stage_cfg))
            job = SearchJob(stage_cfg, stage_run, op_mask=mask,
                            skip_dropout=prog.skip_dropout[k])
            done = _fit_search(job, stage_run, desc=f"P-DARTS stage {k + 1}/{len(prog.layers)}")
        model = job.model
        kept = (model.op_mask_normal, model.op_mask_reduce)
        if k < len(prog.layers) - 1:
            kept = mask = (
                prune_ops(model.op_weights(False), model.op_mask_normal, prog.keep_ops[k]),
                prune_ops(model.op_weights(True), model.op_mask_reduce, prog.keep_ops[k]))
        stages.append({"stage": k, "layers": layers, "epochs": done,
                       "skip_dropout": prog.skip_dropout[k],
                       "kept_after": {cell: [[job.space.ops[i] for i, on in enumerate(row) if on]
                                             for row in m.tolist()]
                                      for cell, m in zip(("normal", "reduce"), kept)}})
        if run.writes:
            atomic_write_text(run / "stages.json", json.dumps(stages, indent=1))
    return job, done


def run_search(cfg: SearchConfig) -> SearchResult:
    """Run (or resume) a search; writes genotype.yaml/.txt, plots and alphas.json.

    Under torchrun every rank runs the search on its shard of the data and rank 0 alone
    writes the run folder; every rank returns the same result.
    """
    if cfg.seeds:
        raise ConfigError("seeds: several seeds run through nas.search.run_search_seeds "
                          "(nas search CONFIG seeds=[...]), not run_search")
    check_search_runtime(cfg.runtime)  # before the run folder and the process group
    device = check_device(cfg.runtime.device)
    with (distributed.session(device, cfg.runtime.dist_timeout),
          open_run(cfg.name, cfg.run_dir, "search") as run):
        run.save_config(dump_config(cfg))
        if cfg.progressive.layers:
            job, done = _progressive_stages(cfg, run)
        else:
            job = SearchJob(cfg, run)
            done = _fit_search(job, run)
        genotype = job.model.genotype(cfg.skip_guard.max_skips, cfg.skip_guard.max_param_free)
        if cfg.select.method == "perturbation":
            if run.writes:
                save_genotype(genotype, run / "genotype_argmax.yaml")
            genotype = select_by_perturbation(job, run, genotype)
        if run.writes:
            save_genotype(genotype, run / "genotype.yaml")
            atomic_write_text(run / "genotype.txt", str(genotype) + "\n")
            plot_genotype(genotype, run.path, stem="genotype")
            if job.alpha_history:
                plot_alphas(job.space.ops, job.alpha_history[-1], run / "alphas.png")
            atomic_write_text(run / "alphas.json", json.dumps(job._alpha_doc()))
        distributed.barrier("rank 0 to write the genotype")
        log.info("genotype: %s (%s)", genotype, run / "genotype.yaml")
        return SearchResult(genotype, run.path, done)
