"""Deployment export: every registry op and a network of all five paper operators, in their
deploy form, exported (ONNX / TorchScript / torch.export), reloaded and matched at two batch
sizes; ``nas export`` on a finished run; its errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.cli.main import main
from nas.deploy import deployable_modules, to_deploy
from nas.errors import ConfigError
from nas.evaluate.export import (
    FORMATS,
    ExportError,
    compare_outputs,
    export_form,
    export_verified,
    load_artifact,
    parse_formats,
    serialize,
)
from nas.genotype import save_genotype
from nas.network import NetworkCIFAR
from nas.ops import OPS, BDSCConv2d, BDSCDeploy2d, DOConv2d, SparseShift2d, list_ops
from nas.ops.ssl import IntegerShift2d

HAVE_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason='needs pip install "nas-effconv[export]"')

TINY_TRAIN = [
    "data.name=synthetic",
    "data.options={num_samples: 24, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=12", "data.eval_batch_size=24", "model.layers=3", "model.init_channels=4",
    "optim.epochs=1", "runtime.progress=false", "runtime.device=cpu",
]


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every state off its init so a wrong export cannot hide behind identities:
    BN statistics and affine terms, SSL shifts up to ±3 pixels, DO-Conv's D', BDSC's Q."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, SparseShift2d):
                m.displacement.copy_(torch.rand(m.displacement.shape, generator=g) * 6.8 - 3.4)
            elif isinstance(m, DOConv2d) and m.D_prime is not None:
                m.D_prime.copy_(torch.randn(m.D_prime.shape, generator=g) * 0.1)
            elif isinstance(m, BDSCConv2d):
                m.Q.copy_(torch.rand(m.Q.shape, generator=g) * 2 - 1)
    return model.eval()


def _batch_dim_is_symbolic(data: bytes) -> bool:
    import onnx

    model = onnx.load_from_string(data)
    dims = [v.type.tensor_type.shape.dim[0] for v in (*model.graph.input, *model.graph.output)]
    return all(d.dim_param and not d.HasField("dim_value") for d in dims)


def _op_cases() -> list[tuple[str, int, int]]:
    """(op, stride, map size): every op at both strides on 8×8, odd-size paths on 9×9."""
    odd = ("skip_connect", "c2sp_conv_2x2", "c4sp_conv_4x4", "ssl_conv")
    return [(n, s, 8) for n in list_ops() for s in (1, 2)] + [(n, 2, 9) for n in odd]


@needs_ort
@pytest.mark.parametrize("name, stride, size", _op_cases(),
                         ids=[f"{n}-s{s}-{h}x{h}" for n, s, h in _op_cases()])
def test_every_op_deploy_form_matches_in_onnx_runtime(name, stride, size):
    torch.manual_seed(0)
    deployed = to_deploy(_randomize(OPS[name](8, stride, True)))
    assert not deployable_modules(deployed)  # the inference form: shifts, masks, folded convs
    assert not any(m.training for m in deployed.modules())  # BN statistics, no dropout
    batches = [torch.randn(4, 8, size, size), torch.randn(1, 8, size, size)]
    data, row = export_verified(deployed, batches, "onnx")
    assert row["matches"] and row["max_abs_err"] < 1e-4 and row["bytes"] == len(data)
    assert row["check_batches"] == [4, 1] and row["exporter"] == "torchscript"
    assert _batch_dim_is_symbolic(data)
    x = torch.randn(3, 8, size, size)  # a third batch size, straight through ONNX Runtime
    with torch.no_grad():
        torch.testing.assert_close(load_artifact(data, "onnx")(x), deployed(x),
                                   rtol=1e-3, atol=1e-4)


def test_c2sp_exports_as_pad_and_concat():
    """The export form swaps C2sp's slice-assigned buffer for pads + concat: same outputs."""
    op = to_deploy(_randomize(OPS["c4sp_conv_4x4"](12, 1, True)))  # three channels per group
    form = export_form(op)
    assert form is not op and any(type(m).__name__ == "_C2spPadConcat" for m in form.modules())
    x = torch.randn(2, 12, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(form(x), op(x), rtol=0, atol=0)
    plain = OPS["sep_conv_3x3"](8, 1, True).eval()
    assert export_form(plain) is plain  # nothing to rewrite: no copy


@needs_ort
def test_c2sp_onnx_graph_has_no_scatter():
    import onnx

    data = serialize(to_deploy(OPS["c2sp_conv_2x2"](8, 1, True)), torch.randn(2, 8, 8, 8), "onnx")
    kinds = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert "Pad" in kinds and "Concat" in kinds and "ScatterND" not in kinds


def _paper_ops_chain() -> nn.Module:
    """The paper operators whose deploy forms are more than convolutions, in a row: C2sp's
    pads, osep's shuffle (a reshape over the symbolic batch), BDSC's masks, SSL's gather.
    DO-Conv deploys as a plain conv."""
    torch.manual_seed(0)
    names = [("c2sp_conv_2x2", 1), ("osep_conv_3x3", 2), ("bdsc_conv_3x3", 1), ("ssl_conv", 2)]
    return to_deploy(_randomize(nn.Sequential(*(OPS[n](8, s, True) for n, s in names))))


@pytest.mark.slow  # the dynamo exporter's first call costs 10-30 s of CPU
@needs_ort
def test_dynamo_exporter_takes_over_when_the_torchscript_one_fails(monkeypatch, caplog):
    import nas.cost.onnx

    def broken(*args, **kwargs):
        raise RuntimeError("exporter gone")

    monkeypatch.setattr(nas.cost.onnx, "_onnx_legacy", broken)
    model = _paper_ops_chain()
    batches = [torch.randn(3, 8, 8, 8), torch.randn(1, 8, 8, 8)]
    data, row = export_verified(model, batches, "onnx")
    assert row["exporter"] == "dynamo" and row["matches"] and row["max_abs_err"] < 1e-4
    assert _batch_dim_is_symbolic(data)
    assert "exporter gone" in caplog.text and "used dynamo" in caplog.text
    with pytest.raises(ExportError, match="torchscript: exporter gone"):
        export_verified(model, batches, "onnx", onnx_exporter="torchscript")
    with pytest.raises(ConfigError, match="ONNX exporter"):
        export_verified(model, batches, "onnx", onnx_exporter="tf2onnx")


def _paper_network(genotype) -> nn.Module:
    torch.manual_seed(0)
    net = _randomize(NetworkCIFAR(8, 5, 3, True, genotype))
    deployed = to_deploy(net)
    kinds = {type(m) for m in deployed.modules()}
    assert {IntegerShift2d, BDSCDeploy2d} <= kinds and not kinds & {DOConv2d, SparseShift2d}
    return deployed


# The `exported` format of such a network is checked by the CLI test below (its run trains
# the same genotype): torch.export of a network is the slowest step here (10-25 s on CPU).
@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_ort), "torchscript"])
def test_network_with_all_paper_ops_exports(fmt, all_paper_ops):
    ops = all_paper_ops.ops_used()
    assert {"c2sp_conv_2x2", "c4sp_conv_4x4", "osep_conv_3x3", "bdsc_conv_3x3", "ssl_conv",
            "do_conv_3x3", "do_sep_conv_3x3"} <= ops
    deployed = _paper_network(all_paper_ops)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(6, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)]
    data, row = export_verified(deployed, batches, fmt, latency_batches=(1, 4), repeats=2)
    assert row["matches"] and row["max_abs_err"] < 1e-4 and row["max_rel_err"] < 1e-3
    assert row["latency_b1_ms"] > 0 and row["latency_b4_ms"] > 0
    run = load_artifact(data, fmt)
    x = torch.randn(5, 3, 8, 8, generator=g)
    with torch.no_grad():
        expected = deployed(x)
    assert run(x).shape == (5, 5)
    torch.testing.assert_close(run(x), expected, rtol=1e-3, atol=1e-4)


def _skew_artifacts(monkeypatch: pytest.MonkeyPatch, scale: float = 1.0,
                    offset: float = 0.0) -> None:
    """Make every reloaded artifact compute ``scale·y + offset``: a wrong export."""
    import nas.evaluate.export

    real = nas.evaluate.export.load_artifact

    def load(data: bytes, fmt: str):
        run = real(data, fmt)
        return lambda x: run(x) * scale + offset

    monkeypatch.setattr(nas.evaluate.export, "load_artifact", load)


def test_a_wrong_artifact_is_caught(monkeypatch):
    model = to_deploy(_randomize(OPS["ssl_conv"](8, 1, True)))
    batches = [torch.randn(2, 8, 8, 8), torch.randn(1, 8, 8, 8)]
    check = compare_outputs(lambda x: model(x) + 1e-2, model, batches, atol=1e-4, rtol=1e-3)
    assert not check["matches"] and check["max_abs_err"] == pytest.approx(1e-2, rel=1e-3)
    # A graph with the example's batch size baked in: right at batch 2, wrong shape at 1.
    baked = compare_outputs(lambda x: model(torch.cat([x, x])[:2]), model, batches, 1e-4, 1e-3)
    assert not baked["matches"] and "at batch 1" in baked["problem"]
    _skew_artifacts(monkeypatch, scale=1.01)
    with pytest.raises(ExportError, match="does not match"):
        export_verified(model, batches, "torchscript")


def test_parse_formats():
    assert parse_formats("onnx") == ["onnx"]
    assert parse_formats(" ONNX , exported,onnx") == ["onnx", "exported"]
    assert parse_formats("all") == list(FORMATS)
    for bad in ("tflite", "", "onnx,"):
        with pytest.raises(ConfigError):
            parse_formats(bad)


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, all_paper_ops) -> Path:
    """A finished one-epoch `nas train` run of a genotype with every paper operator."""
    root = tmp_path_factory.mktemp("export_run")
    genotype = save_genotype(all_paper_ops, root / "paper_ops.yaml")
    run = root / "run"
    assert main(["-q", "train", "quick", f"run_dir={run}", f"model.genotype={genotype}",
                 *TINY_TRAIN]) == 0
    return run


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow  # torch.export of a network: 10-20 s of CPU
@needs_ort
def test_cli_exports_a_run_in_every_format(trained_run, capsys):
    argv = ["-q", "export", str(trained_run), "--format", "all", "--latency-batch", "4"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    folder = trained_run / "export"
    report = json.loads((folder / "export.json").read_text())
    rows = {r["format"]: r for r in report["exports"]}
    assert set(rows) == set(FORMATS)
    for fmt, row in rows.items():
        path = Path(row["file"])
        assert path == folder / FORMATS[fmt] and path.stat().st_size == row["bytes"] > 0
        assert row["matches"] and row["max_abs_err"] < 1e-4
        assert row["check_batches"] == [24, 1]  # the whole (24-image) test split, then one
        assert row["latency_b1_ms"] > 0 and row["latency_b4_ms"] > 0
        assert fmt in table
    assert rows["onnx"]["opset"] == 18
    assert report["reference"]["latency_b1_ms"] > 0 and len(report["mean"]) == 3
    assert not list(folder.glob(".*.tmp"))
    # The file on disk runs in ONNX Runtime; the normalisation travels with it.
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load(folder / "model.onnx").metadata_props}
    assert json.loads(meta["input_shape"]) == [3, 8, 8] and "ssl_conv" in meta["genotype"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": torch.randn(7, 3, 8, 8).numpy()})[0].shape == (7, 3)
    # A second export of one format replaces its row and keeps the others.
    assert main(["-q", "export", str(trained_run), "--format", "torchscript",
                 "--latency-batch", "2"]) == 0
    again = json.loads((folder / "export.json").read_text())
    assert [r["format"] for r in again["exports"]] == ["onnx", "exported", "torchscript"]
    assert "latency_b2_ms" in again["exports"][-1]


def test_cli_out_folder(trained_run, tmp_path, capsys):
    out = tmp_path / "deploy" / "artifacts"
    assert main(["-q", "export", str(trained_run), "--format", "torchscript", "--out", str(out),
                 "--latency-batch", "2"]) == 0
    assert (out / "model.torchscript.pt").is_file()
    report = json.loads((out / "export.json").read_text())
    assert [r["format"] for r in report["exports"]] == ["torchscript"]
    assert str(out / "export.json") in capsys.readouterr().out


def test_cli_mismatch_exits_1_and_writes_nothing(trained_run, tmp_path, monkeypatch, capsys):
    _skew_artifacts(monkeypatch, offset=0.5)
    out = tmp_path / "out"
    assert main(["-q", "export", str(trained_run), "--format", "torchscript",
                 "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert line.startswith("error: torchscript export does not match") and "0.5" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--format", "tflite"], "tflite"),
        (["--format", "onnx", "--opset", "5"], "opset"),
        (["--check-batch", "0", "--format", "torchscript"], "batch"),
        (["--onnx-exporter", "tf2onnx"], "ONNX exporter"),
        (["--opset", "21", "--onnx-exporter", "torchscript"], "opsets up to 20"),
    ],
)
def test_cli_bad_options_exit_2(trained_run, args, expect, capsys):
    assert main(["-q", "export", str(trained_run), *args]) == 2
    assert expect in _one_error_line(capsys)


def test_cli_not_a_run_exits_2(tmp_path, capsys):
    assert main(["-q", "export", str(tmp_path), "--format", "torchscript"]) == 2
    assert "not a finished training run" in _one_error_line(capsys)
    assert not (tmp_path / "export").exists()


def test_cli_onnx_without_onnxruntime_says_what_to_install(trained_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    assert main(["-q", "export", str(trained_run), "--format", "onnx"]) == 2
    assert 'pip install "nas-effconv[export]"' in _one_error_line(capsys)


def test_checks_use_the_runs_evaluation_split(monkeypatch):
    """A run trained with a holdout is checked on that holdout; the test split is not read."""
    import nas.evaluate.deploy_report as deploy
    from nas.config import load_config
    from nas.evaluate.train import TrainConfig

    data = [o for o in TINY_TRAIN if o.startswith("data.")]
    cfg = load_config(TrainConfig, None, [*data, "holdout=0.25"])
    real = deploy.load_splits

    def train_only(data_cfg, test=True):
        assert not test, "the test split was read"
        return real(data_cfg, test=False)

    monkeypatch.setattr(deploy, "load_splits", train_only)
    assert len(deploy.evaluation_split(cfg)) == 6  # 3 classes x round(0.25 * 8)
    monkeypatch.setattr(deploy, "load_splits", real)
    assert len(deploy.evaluation_split(load_config(TrainConfig, None, data))) == 24
