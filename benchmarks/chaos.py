"""Crash test: SIGKILL real `nas search`, `nas train` and `nas mo-search` processes at
random moments, re-run the same command until it finishes, and check what survived.

For each job: one uninterrupted reference run, then a chaos run that is killed ``--kills``
times (at random delays, and every third kill from inside an atomic file write through
the ``NAS_CHAOS_KILL_IN_WRITE`` hook) and re-run with the same command until it exits 0.
Checks, per job:

- the run finishes;
- deterministic mode: the final genotype and the per-epoch metrics (timings aside) equal
  the uninterrupted run's (search, train);
- the study keeps every trial that was complete at any kill, ends with ``n_trials`` complete
  trials, and has no duplicate trial numbers or parameters (mo-search);
- every file in the run folder parses (JSON, JSONL, YAML, CSV, checkpoints with
  ``weights_only=True``, PNG, SQLite ``integrity_check``) and no temp file is left.

Writes ``benchmarks/results/chaos.json`` and ``chaos.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe_env, write_results  # noqa: E402

DATA = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8",
    "data.eval_batch_size=24",
    "runtime.progress=false",
]
OPS = ("space.ops=[none, skip_connect, max_pool_3x3, sep_conv_3x3, c2sp_conv_2x2, ssl_conv, "
       "bdsc_conv_3x3, do_conv_3x3, osep_conv_3x3]")
JOBS: dict[str, list[str]] = {
    "search": ["search", "quick", *DATA, OPS, "space.steps=2", "space.multiplier=2",
               "model.init_channels=4", "model.layers=3", "runtime.deterministic=true",
               "optim.epochs=6"],
    "train": ["train", "quick", *DATA, "model.genotype=DARTS_V2", "model.init_channels=4",
              "model.layers=3", "runtime.deterministic=true", "optim.epochs=6"],
    "mo-search": ["mo-search", "quick", *DATA, OPS, "space.steps=2", "space.multiplier=2",
                  "budget.epochs=1", "budget.init_channels=4", "budget.layers=3",
                  "latency.repeats=2", "population_size=2", "n_trials=8"],
}
TIMING_KEYS = {"epoch_time_s", "images_per_s", "peak_mem_mb", "time_s", "wall_s"}
KILL_IN_WRITE = "NAS_CHAOS_KILL_IN_WRITE"


def command(job: str, run: Path) -> list[str]:
    return [sys.executable, "-m", "nas.cli.main", *JOBS[job], f"run_dir={run}"]


def run_once(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - start, proc.stderr[-2000:]


def completed_trials(run: Path) -> dict[int, str]:
    """Trial number -> params of the COMPLETE trials in the run's SQLite study."""
    db = run / "study.db"
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT t.number, p.param_name, p.param_value FROM trials t "
            "JOIN trial_params p ON p.trial_id = t.trial_id WHERE t.state = 'COMPLETE'"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    params: dict[int, dict[str, float]] = {}
    for number, name, value in rows:
        params.setdefault(number, {})[name] = value
    return {n: json.dumps(p, sort_keys=True) for n, p in params.items()}


def chaos_run(job: str, run: Path, kills: int, est_s: float, rng: random.Random,
              env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Kill the job ``kills`` times, then let it finish; return counts and survivors."""
    cmd = command(job, run)
    done = timed = in_write = restarts = wiped = 0
    seen: dict[int, str] = {}
    while done < kills:
        child_env = dict(env)
        use_write_hook = done % 3 == 2
        if use_write_hook:  # kill inside the k-th atomic write of this process
            child_env[KILL_IN_WRITE] = str(rng.randint(1, 6))
        proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        restarts += 1
        try:
            proc.wait(timeout=None if use_write_hook else rng.uniform(0.5, est_s))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.returncode == -signal.SIGKILL:
            done += 1
            in_write += use_write_hook
            timed += not use_write_hook
        elif proc.returncode == 0 and not use_write_hook:
            # Finished before the kill: start over, so every kill lands on a live run.
            for path in sorted(run.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            seen.clear()  # a new study: what the wiped one held is not expected to survive
            wiped += 1
        seen.update(completed_trials(run))
    code, wall, err = run_once(cmd, env, timeout)
    restarts += 1
    return {"kills": done, "kills_timed": timed, "kills_in_write": in_write,
            "restarts": restarts, "finished_before_kill": wiped, "final_rc": code,
            "final_stderr": err, "seen": seen}


def metrics_rows(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING_KEYS} for x in lines]


def unreadable_files(run: Path) -> list[str]:
    """Files in ``run`` that do not parse as what their suffix says, and stray temp files."""
    bad = []
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        rel = str(path.relative_to(run))
        if "/ray/" in f"/{rel}" or path.name.endswith(".lock"):
            continue
        try:
            if path.name.endswith(".tmp"):
                raise ValueError("temp file left behind")
            if path.stat().st_size == 0 and path.suffix not in {".txt", ".log"}:
                raise ValueError("empty")
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                for line in path.read_text().splitlines():
                    json.loads(line)
            elif path.suffix in {".yaml", ".yml"}:
                yaml.safe_load(path.read_text())
            elif path.suffix == ".csv":
                rows = list(csv.reader(path.open()))
                if len({len(r) for r in rows}) > 1:
                    raise ValueError("ragged CSV")
            elif path.suffix == ".pt":
                torch.load(path, weights_only=True, map_location="cpu")
            elif path.suffix == ".png":
                import matplotlib.image

                matplotlib.image.imread(path)
            elif path.suffix == ".db":
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                [(status,)] = con.execute("PRAGMA integrity_check").fetchall()
                con.close()
                if status != "ok":
                    raise ValueError(status)
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            bad.append(f"{rel}: {type(exc).__name__}: {exc}"[:200])
    return bad


def check_job(job: str, ref: Path, run: Path, result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"job": job, **{k: result[k] for k in (
        "kills", "kills_timed", "kills_in_write", "restarts", "finished_before_kill")}}
    row["finished"] = result["final_rc"] == 0
    row["unreadable"] = unreadable_files(run)
    if job in ("search", "train"):
        row["same_metrics"] = metrics_rows(run) == metrics_rows(ref)
        row["same_genotype"] = (
            yaml.safe_load((run / "genotype.yaml").read_text())
            == yaml.safe_load((ref / "genotype.yaml").read_text())
        )
    else:
        final = completed_trials(run)
        n_trials = int(next(a for a in JOBS[job] if a.startswith("n_trials=")).split("=")[1])
        lost = [n for n, p in result["seen"].items() if final.get(n) != p]
        row["trials_complete"] = len(final)
        row["trials_lost"] = len(lost)
        row["duplicate_params"] = len(final) - len(set(final.values()))
        row["all_trials_done"] = len(final) >= n_trials
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs per job")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/chaos", help="folder for the runs (wiped)")
    p.add_argument("--timeout", type=float, default=900.0, help="per uninterrupted run, s")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop(KILL_IN_WRITE, None)
    work = Path(args.work)
    rows = []
    for job in args.jobs:
        ref, run = work / job / "reference", work / job / "chaos"
        for folder in (ref, run):
            if folder.exists():
                subprocess.run(["rm", "-rf", str(folder)], check=True)
        code, wall, err = run_once(command(job, ref), env, args.timeout)
        if code != 0:
            raise SystemExit(f"{job}: reference run failed ({code}): {err}")
        result = chaos_run(job, run, args.kills, wall, rng, env, args.timeout)
        row = check_job(job, ref, run, result)
        row["reference_s"] = round(wall, 1)
        if not row["finished"]:
            row["error"] = result["final_stderr"].strip().splitlines()[-1:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = all(
        r["finished"] and not r["unreadable"]
        and r.get("same_metrics", True) and r.get("same_genotype", True)
        and not r.get("trials_lost") and not r.get("duplicate_params")
        and r.get("all_trials_done", True)
        for r in rows
    )
    meta = {**describe_env(torch.device("cpu")), "kills_per_job": args.kills,
            "seed": args.seed, "all_checks_passed": ok}
    write_results("chaos", rows, meta, out_dir=args.out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
