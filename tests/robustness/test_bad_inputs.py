"""A corpus of malformed inputs fed to the real CLI, each in its own process.

Every case must exit with status 2 and print exactly one line on stderr (``-q`` keeps
progress lines off it) that names the offending file or field; pickle payloads must not
run (they would create ``MARKER``), and files already in the case's folder keep their
contents (``log.txt`` may only grow).

Each case runs in its own process forked from one warm interpreter (``_fork_cli.py``), so
the corpus costs seconds, not an interpreter start per case; a few cases also run through a
fresh ``python -m nas.cli.main``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

CLI = (sys.executable, "-m", "nas.cli.main", "-q")
MARKER = "MARKER"  # what a payload would create in the case folder if it ran
DATA = (
    "data.options={num_samples: 24, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=12",
    "data.eval_batch_size=24",
    "runtime.progress=false",
    "runtime.device=cpu",
)
TRAIN = ("train", "quick", "run_dir=run", "data.name=synthetic", *DATA, "model.layers=3",
         "model.init_channels=4", "optim.epochs=1")
SEARCH = ("search", "quick", "run_dir=run", "data.name=synthetic", *DATA, "space.steps=2",
          "space.multiplier=2", "space.ops=[none, skip_connect, sep_conv_3x3]",
          "model.init_channels=4", "model.layers=3", "optim.epochs=1")


def _data(name: str) -> tuple[str, ...]:
    """``nas train`` on dataset ``name`` (a file in the case folder)."""
    return (*TRAIN, "data.options={}", f"data.name={name}")


class _Payload:
    """Pickles to a call that would create the marker file if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _genotype(normal: str = "[('sep_conv_3x3', 0), ('skip_connect', 1)]", concat: str = "[2]"):
    return (f"Genotype(normal={normal}, normal_concat={concat}, "
            f"reduce=[('max_pool_3x3', 0), ('skip_connect', 1)], reduce_concat=[2])")


# --------------------------------------------------------------------------- file makers


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return make


def _torch_file(rel: str, obj: Callable[[Path], object]) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj(ws), ws / rel)

    return make


def _raw_pickle(rel: str) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(pickle.dumps({"epoch": _Payload(ws / MARKER)}))

    return make


def _npz(rel: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        np.savez(ws / rel, **arrays)

    return make


def _npy(rel: str, array: np.ndarray) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        with open(ws / rel, "wb") as fh:
            np.save(fh, array)

    return make


def _finished_run(*then: Callable[[Path], None]) -> Callable[[Path], None]:
    """A copy of a finished ``nas train`` run (same command, so same config), then ``then``."""

    def make(ws: Path) -> None:
        shutil.copytree(_FINISHED, ws / "run")
        (ws / "run" / "notes.txt").write_text("keep me\n")
        for step in then:
            step(ws)

    return make


def _fresh_run(*then: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(ws: Path) -> None:
        (ws / "run").mkdir()
        (ws / "run" / "notes.txt").write_text("keep me\n")
        for step in then:
            step(ws)

    return make


def _truncated_checkpoint(ws: Path) -> None:
    path = ws / "run" / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _png_folder(ws: Path, empty: bool = False) -> None:
    for cls in ("a", "b"):
        (ws / "imgs" / cls).mkdir(parents=True)
    if not empty:
        (ws / "imgs" / "a" / "broken.png").write_text("this is not a PNG image\n")
        (ws / "imgs" / "b" / "notes.png").write_bytes(os.urandom(64))


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
LABELS = np.arange(12) % 3


@dataclass(frozen=True)
class Case:
    """``argv`` after ``nas -q``; ``expect`` must appear in the single stderr line."""

    name: str
    argv: tuple[str, ...]
    expect: str
    setup: Callable[[Path], None] | None = None


def _bad_config(name: str, text: str | bytes, expect: str, command: str = "train") -> Case:
    base = TRAIN if command == "train" else SEARCH
    argv = (command, "cfg.yaml", *base[2:])
    return Case(name, argv, expect, _write("cfg.yaml", text))


CASES: list[Case] = [
    # configs ---------------------------------------------------------------------------
    _bad_config("config_unknown_key", "bogus: 1\n", "bogus"),
    _bad_config("config_unknown_nested_key", "optim:\n  lrr: 0.1\n", "optim.lrr"),
    _bad_config("config_wrong_type", "model:\n  drop_path: lots\n", "model.drop_path"),
    _bad_config("config_group_not_mapping", "ssl: [1, 2]\n", "ssl"),
    _bad_config("config_bad_yaml", "optim: {epochs: 1\n", "cfg.yaml"),
    _bad_config("config_tabs_yaml", "optim:\n\tepochs: 1\n", "cfg.yaml"),
    _bad_config(
        "config_python_apply_tag",
        f"optim: !!python/object/apply:os.system ['touch {MARKER}']\n", "cfg.yaml",
    ),
    _bad_config("config_python_object_tag", "data: !!python/object:os.PathLike {}\n", "cfg.yaml"),
    _bad_config("config_top_level_list", "- optim\n- data\n", "cfg.yaml"),
    _bad_config("config_not_utf8", b"optim:\n  lr: \xff\xfe\n", "cfg.yaml"),
    _bad_config("config_integer_key", "1: 2\n", "'1'"),
    _bad_config("config_search_literal", "arch:\n  order: third\n", "arch.order", "search"),
    Case("config_missing_file", ("train", "no_such_config.yaml"), "no_such_config"),
    Case("override_without_equals", (*TRAIN, "optim.epochs"), "optim.epochs"),
    Case("override_wrong_type", (*TRAIN, "data.batch_size=abc"), "data.batch_size"),
    Case("override_out_of_range", (*TRAIN, "data.batch_size=0"), "data.batch_size"),
    Case("override_huge_number", (*TRAIN, "optim.lr=1" + "0" * 400), "optim.lr"),
    Case("override_not_a_group", (*TRAIN, "optim=1", "optim.lr.x=2"), "optim"),
    # genotypes -------------------------------------------------------------------------
    Case("genotype_unknown_op", (*TRAIN, "model.genotype=" + _genotype(
        "[('warp_conv_9x9', 0), ('skip_connect', 1)]")), "warp_conv_9x9"),
    Case("genotype_bad_index", (*TRAIN, "model.genotype=" + _genotype(
        "[('sep_conv_3x3', 7), ('skip_connect', 1)]")), "normal[0]"),
    Case("genotype_bad_concat", (*TRAIN, "model.genotype=" + _genotype(concat="[9]")),
         "normal_concat"),
    Case("genotype_truncated", (*TRAIN, "model.genotype=" + _genotype()[:40]), "genotype"),
    Case("genotype_eval_payload", (*TRAIN, "model.genotype=Genotype(normal=__import__('os')"
         f".system('touch {MARKER}'), normal_concat=[2], reduce=[], reduce_concat=[2])"),
         "normal"),
    Case("genotype_list_comprehension", (*TRAIN, "model.genotype=" + _genotype(
        f"[(open('{MARKER}', 'w').name, i) for i in range(2)]")), "normal"),
    Case("genotype_file_missing_key", (*TRAIN, "model.genotype=g.yaml"), "g.yaml",
         _write("g.yaml", "normal: [[sep_conv_3x3, 0], [skip_connect, 1]]\n")),
    Case("genotype_file_python_tag", (*TRAIN, "model.genotype=g.yaml"), "g.yaml",
         _write("g.yaml", f"genotype: !!python/object/apply:os.system ['touch {MARKER}']\n")),
    Case("plot_eval_payload", ("plot", f"Genotype(normal=__import__('os').system('touch "
         f"{MARKER}'), normal_concat=[2], reduce=[], reduce_concat=[2])"), "normal"),
    Case("plot_unknown_baseline", ("plot", "DARTS_V9"), "DARTS_V9"),
    # checkpoints: train resume, search resume, deploy -------------------------------------
    Case("train_ckpt_random_bytes", TRAIN, "checkpoint.pt",
         _finished_run(_write("run/checkpoint.pt", os.urandom(4096)))),
    Case("train_ckpt_pickle_payload", TRAIN, "checkpoint.pt",
         _finished_run(_raw_pickle("run/checkpoint.pt"))),
    Case("train_ckpt_torch_payload", TRAIN, "checkpoint.pt", _finished_run(
        _torch_file("run/checkpoint.pt", lambda ws: {"epoch": 1, "job": _Payload(ws / MARKER)}))),
    Case("train_ckpt_foreign_network", TRAIN, "checkpoint.pt", _finished_run(_torch_file(
        "run/checkpoint.pt", lambda ws: {"epoch": 1, "job": {
            "model": torch.nn.Linear(3, 2).state_dict(), "optimizer": {}, "scheduler": {}},
            "rng": {}}))),
    Case("train_ckpt_bare_state_dict", TRAIN, "checkpoint.pt", _finished_run(
        _torch_file("run/checkpoint.pt", lambda ws: torch.nn.Linear(3, 2).state_dict()))),
    Case("train_ckpt_not_a_dict", TRAIN, "checkpoint.pt", _finished_run(
        _torch_file("run/checkpoint.pt", lambda ws: [torch.zeros(2)]))),
    Case("train_ckpt_empty", TRAIN, "checkpoint.pt",
         _finished_run(_write("run/checkpoint.pt", b""))),
    Case("train_ckpt_truncated", TRAIN, "checkpoint.pt", _finished_run(_truncated_checkpoint)),
    Case("search_ckpt_random_bytes", SEARCH, "checkpoint.pt",
         _fresh_run(_write("run/checkpoint.pt", os.urandom(4096)))),
    Case("search_ckpt_pickle_payload", SEARCH, "checkpoint.pt",
         _fresh_run(_raw_pickle("run/checkpoint.pt"))),
    Case("search_ckpt_of_a_train_run", SEARCH, "checkpoint.pt",
         _fresh_run(lambda ws: shutil.copy(_FINISHED / "checkpoint.pt", ws / "run"))),
    Case("deploy_weights_random_bytes", ("deploy", "run"), "model.pt",
         _finished_run(_write("run/model.pt", os.urandom(4096)))),
    Case("deploy_weights_pickle_payload", ("deploy", "run"), "model.pt",
         _finished_run(_raw_pickle("run/model.pt"))),
    Case("deploy_weights_foreign_network", ("deploy", "run"), "model.pt", _finished_run(
        _torch_file("run/model.pt", lambda ws: torch.nn.Linear(3, 2).state_dict()))),
    Case("deploy_weights_wrong_shapes", ("deploy", "run"), "model.pt", _finished_run(
        _torch_file("run/model.pt", lambda ws: {
            k: torch.zeros(2, 2, 1, 1) if k == "stem.0.weight" else v
            for k, v in torch.load(_FINISHED / "model.pt", weights_only=True).items()}))),
    Case("deploy_weights_empty", ("deploy", "run"), "model.pt",
         _finished_run(_write("run/model.pt", b""))),
    Case("deploy_config_bad_yaml", ("deploy", "run"), "config.yaml",
         _finished_run(_write("run/config.yaml", "model: {layers: 3\n"))),
    # datasets --------------------------------------------------------------------------
    Case("npz_float_images", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES / 255.0, y=LABELS, x_test=IMAGES / 255.0, y_test=LABELS)),
    Case("npz_wrong_shape", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES.reshape(12, -1), y=LABELS, x_test=IMAGES, y_test=LABELS)),
    Case("npz_negative_labels", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES, y=LABELS - 1, x_test=IMAGES, y_test=LABELS)),
    Case("npz_label_beyond_classes", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES, y=LABELS * 9, x_test=IMAGES, y_test=LABELS,
              classes=np.array(["a", "b", "c"]))),
    Case("npz_missing_labels", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES, x_test=IMAGES, y_test=LABELS)),
    Case("npz_label_count_mismatch", _data("npz:d.npz"), "d.npz",
         _npz("d.npz", x=IMAGES, y=LABELS[:5], x_test=IMAGES, y_test=LABELS)),
    Case("npz_not_an_npz", _data("npz:d.npz"), "d.npz",
         _write("d.npz", "x,y\n1,2\n")),
    Case("npz_is_a_single_npy_array", _data("npz:d.npz"), "d.npz", _npy("d.npz", IMAGES)),
    Case("npz_object_array", _data("npz:d.npz"), "d.npz", _npz(
        "d.npz", x=np.array([_Payload(Path(MARKER))], dtype=object), y=LABELS[:1],
        x_test=IMAGES, y_test=LABELS)),
    Case("imagefolder_empty", _data("imagefolder:imgs"), "imgs",
         lambda ws: _png_folder(ws, empty=True)),
    Case("imagefolder_not_images", _data("imagefolder:imgs"), "imgs", _png_folder),
    Case("imagefolder_missing", _data("imagefolder:nowhere"), "nowhere"),
    # run folders -----------------------------------------------------------------------
    Case("run_dir_is_a_file", (*TRAIN, "run_dir=taken"), "taken", _write("taken", "keep me\n")),
    Case("run_dir_under_a_file", (*TRAIN, "run_dir=taken/run"), "taken",
         _write("taken", "keep me\n")),
    Case("plot_out_is_a_file", ("plot", "DARTS_V2", "--out", "taken"), "taken",
         _write("taken", "keep me\n")),
]

_FINISHED: Path  # set by the ``outcomes`` fixture: a finished tiny ``nas train`` run


def _snapshot(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


@dataclass
class Outcome:
    """What one case did: exit status, stderr, and its folder's files before the command."""

    code: int
    stderr: str
    before: dict[str, bytes]
    folder: Path


ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny ``nas train`` run; checkpoint and deploy cases start from copies."""
    global _FINISHED
    template = tmp_path_factory.mktemp("finished")
    subprocess.run([*CLI, *TRAIN], cwd=template, env=ENV, check=True, capture_output=True)
    _FINISHED = template / "run"
    return _FINISHED


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, finished_run: Path) -> dict[str, Outcome]:
    """Every case in its own process, forked from one warm interpreter (``_fork_cli.py``)."""
    root = tmp_path_factory.mktemp("corpus")
    jobs, befores = [], {}
    for case in CASES:
        ws = root / case.name
        ws.mkdir()
        if case.setup is not None:
            case.setup(ws)
        befores[case.name] = _snapshot(ws)
        jobs.append({"argv": ["-q", *case.argv], "cwd": str(ws),
                     "stdout": str(root / f"{case.name}.out"),
                     "stderr": str(root / f"{case.name}.err")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    driver = Path(__file__).with_name("_fork_cli.py")
    subprocess.run([sys.executable, str(driver), str(root / "jobs.json"), str(root / "codes.json")],
                   env=ENV, check=True, timeout=1200)
    codes = json.loads((root / "codes.json").read_text())
    return {
        c.name: Outcome(code, (root / f"{c.name}.err").read_text(), befores[c.name], root / c.name)
        for c, code in zip(CASES, codes)
    }


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def _check(case: Case, out: Outcome) -> None:
    lines = out.stderr.strip().splitlines()
    assert out.code == 2, out.stderr[-2000:]
    assert len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith("error: ") and case.expect in lines[0], lines[0]
    assert not (out.folder / MARKER).exists(), "a payload was executed"
    after = _snapshot(out.folder)
    for rel, data in out.before.items():
        assert rel in after, f"{rel} was removed"
        if Path(rel).name == "log.txt":
            assert after[rel].startswith(data), f"{rel} lost lines"
        else:
            assert after[rel] == data, f"{rel} was changed"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_line(case: Case, outcomes: dict[str, Outcome]):
    _check(case, outcomes[case.name])


REAL_PROCESS = (
    "config_python_apply_tag", "train_ckpt_pickle_payload", "deploy_weights_foreign_network",
)


@pytest.mark.parametrize("name", REAL_PROCESS)
def test_same_in_a_fresh_interpreter(name: str, tmp_path: Path, finished_run: Path):
    """A few cases again through ``python -m nas.cli.main`` itself (the fork driver's baseline)."""
    case = next(c for c in CASES if c.name == name)
    if case.setup is not None:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    proc = subprocess.run([*CLI, *case.argv], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=300)
    _check(case, Outcome(proc.returncode, proc.stderr, before, tmp_path))
