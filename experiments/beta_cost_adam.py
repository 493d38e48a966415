"""Why the cost-aware β-DARTS search chose the costliest ops: α alone, no network.

Builds the cost tensor of a search config's supernet (``nas.search.cost.cost_tensor``),
then runs the architecture optimizer of that config (Adam, its lr, betas and weight decay)
for the search's α steps on the α terms that carry no data: λ·Σ softmax(α)·cost, with and
without β-DARTS's ramped λ_β·mean logsumexp(α) (``stabilize.beta``, ramped per epoch as
the search does). Prints each op's mean mixing weight minus 1/|ops|, in units of 1e-4.

With the cost term alone the costly ops end lowest. With β-DARTS's ramp added, the order
flips for the costliest: Adam's step on each α is about g_t / RMS(g so far); the ramp
grows every g, and the cost term's constant part makes the growth of a costly op's g
relatively smaller, so it steps down less than a cheap op does.

    python experiments/beta_cost_adam.py [CONFIG] [--images N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from nas.config import load_config
from nas.run import RunDir
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.stabilizers import beta_regularizer, ramp

HERE = Path(__file__).resolve().parent


def simulate(cost: torch.Tensor, cfg: SearchConfig, steps_per_epoch: int, beta: float,
             seed: int = 0) -> torch.Tensor:
    """Each op's mean mixing weight (over cells and edges) after the search's α steps."""
    gen = torch.Generator().manual_seed(seed)
    alpha = (1e-3 * torch.randn(cost.shape, generator=gen)).requires_grad_()
    arch = cfg.arch
    opt = torch.optim.Adam([alpha], lr=arch.lr, betas=arch.betas,
                           weight_decay=arch.weight_decay)
    epochs = cfg.optim.epochs
    for epoch in range(arch.warmup(epochs), epochs):  # the search's α warm-up rule
        lam = ramp(beta, epoch, epochs)
        for _ in range(steps_per_epoch):
            loss = cfg.cost.weight * (alpha.softmax(-1) * cost).sum()
            if lam > 0:
                loss = loss + lam * beta_regularizer([alpha])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return alpha.detach().softmax(-1).mean(dim=(0, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=str(HERE / "fashion_mnist_cpu/search_cost.yaml"))
    p.add_argument("--images", type=int, default=None,
                   help="architecture images per epoch (default: half of data.limit)")
    args = p.parse_args()
    cfg = load_config(SearchConfig, args.config, ["seeds=null", "runtime.progress=false",
                                                  "runtime.tensorboard=false"])
    # the supernet of the config on synthetic images of the same shape: the cost depends
    # only on the shapes, and the dataset need not be here
    shape = {"fashion_mnist": (1, 28), "mnist": (1, 28)}.get(cfg.data.name, (3, 32))
    synth = load_config(SearchConfig, args.config, [
        "seeds=null", "runtime.progress=false", "runtime.tensorboard=false",
        "data.name=synthetic", "data.limit=null",
        f"data.options={{num_samples: 64, image_size: {shape[1]}, channels: {shape[0]}, "
        "num_classes: 10}"])
    with tempfile.TemporaryDirectory() as tmp:
        job = SearchJob(synth, RunDir(Path(tmp)))
        ops = job.model.space.ops
        if job.cost is None:
            raise SystemExit(f"{args.config}: cost.weight is 0, no cost term to study")
        cost = torch.stack([job.cost[job.model.normal_cells].sum(0),
                            job.cost[job.model.reduce_cells].sum(0)])
    images = args.images or (cfg.data.limit or 50_000) // 2
    steps = -(-images // cfg.data.batch_size)
    mean_cost = cost.sum(0).mean(0)
    print(f"{args.config}: {steps} α steps per epoch, epochs "
          f"{cfg.arch.warmup(cfg.optim.epochs)}.."
          f"{cfg.optim.epochs - 1}, λ_cost={cfg.cost.weight}, β-DARTS λ up to "
          f"{cfg.stabilize.beta}")
    rows = {"cost only": simulate(cost, cfg, steps, 0.0),
            "cost + β-DARTS": simulate(cost, cfg, steps, cfg.stabilize.beta)}
    print("| op | cost per edge (M params) | " + " | ".join(rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for i, op in enumerate(ops):
        cells = " | ".join(f"{1e4 * (float(w[i]) - 1 / len(ops)):+.1f}" for w in rows.values())
        print(f"| {op} | {float(mean_cost[i]):.2e} | {cells} |")
    print("(mean mixing weight minus 1/|ops|, ×1e-4)")


if __name__ == "__main__":
    main()
