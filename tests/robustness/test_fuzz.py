"""Property-based fuzzing of the two text parsers users feed: genotype strings and configs.

Whatever the input, :meth:`Genotype.parse` returns a genotype or raises a one-line
``GenotypeError``, and :func:`load_config` returns a config or raises a one-line
``ConfigError``; neither ever evaluates its input.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.config import DataConfig, OptimConfig, RuntimeConfig, SSLConfig, load_config
from nas.errors import ConfigError, GenotypeError, NasError
from nas.genotype import Genotype
from nas.search.config import SearchConfig
from nas.spaces.baselines import BASELINES

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
MARKER = Path(tempfile.gettempdir()) / f"nas-fuzz-marker-{os.getpid()}"  # made if a payload ran
PAYLOADS = [
    f"__import__('os').system('touch {MARKER}')",
    f"open('{MARKER}', 'w')",
    f"exec(\"open('{MARKER}', 'w')\")",
    f"[open('{MARKER}', 'w') for _ in range(1)]",
    f"(lambda: open('{MARKER}', 'w'))()",
    "range(10**12)",
    "range(0, 5, 0)",
    "'a' * 10**9",
    "-True",
    "*x",
    "**{}",
    "Genotype",
    "ranger(2, 6)",
]
VALID = [str(g) for g in BASELINES.values()]
TOKENS = ["(", ")", "[", "]", ",", "'", "=", " ", "\n", "Genotype", "normal", "reduce",
          "normal_concat", "reduce_concat", "range", "sep_conv_3x3", "skip_connect", "0", "1",
          "-1", "2", "99", "{", "}", ":", "None", "1.5", "b''", "\\", *PAYLOADS]


def _refuse(*_args, **_kwargs):
    raise AssertionError("the parser tried to evaluate its input")


def _check_genotype_text(text: str) -> None:
    with mock.patch.object(builtins, "eval", _refuse), mock.patch.object(builtins, "exec", _refuse):
        try:
            genotype = Genotype.parse(text)
        except GenotypeError as exc:
            message = str(exc)
            assert message and "\n" not in message, repr(message)
        else:
            assert isinstance(genotype, Genotype)
            assert Genotype.parse(str(genotype)) == genotype  # valid ones round-trip
    assert not MARKER.exists(), f"payload ran for {text!r}"


@st.composite
def mutated_genotype(draw: st.DrawFn) -> str:
    """A valid DARTS string with a few slices deleted, replaced or repeated."""
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
        piece = draw(st.sampled_from(TOKENS) | st.text(max_size=6))
        if action == "delete":
            text = text[:i] + text[j:]
        elif action == "insert":
            text = text[:i] + piece + text[i:]
        elif action == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@FUZZ
@given(st.text(max_size=400))
def test_parse_arbitrary_text(text: str):
    _check_genotype_text(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_parse_token_soup(text: str):
    _check_genotype_text(text)


@FUZZ
@given(mutated_genotype())
def test_parse_mutated_darts_strings(text: str):
    _check_genotype_text(text)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_every_field_is_refused(payload: str):
    fields = ["[('sep_conv_3x3', 0), ('skip_connect', 1)]", "[2]"] * 2
    for k in range(4):
        spelled = [payload if i == k else f for i, f in enumerate(fields)]
        text = (f"Genotype(normal={spelled[0]}, normal_concat={spelled[1]}, "
                f"reduce={spelled[2]}, reduce_concat={spelled[3]})")
        _check_genotype_text(text)
        with pytest.raises(GenotypeError):
            Genotype.parse(text)
    assert not MARKER.exists()


# --------------------------------------------------------------------------------- configs

CLASSES = [DataConfig, OptimConfig, RuntimeConfig, SSLConfig, SearchConfig]
KEYS = sorted(
    {"name", "data", "optim", "runtime", "ssl", "space", "model", "arch", "cost", "skip_guard",
     "batch_size", "epochs", "lr", "device", "norm", "penalty", "options", "limit", "portion",
     "ops", "steps", "order", "betas", "seed", "amp", "augment", "run_dir", "max_skips"}
)
NAMES = ["cifar10", "synthetic", "l1", "first", "full"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(NAMES))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(), inner,
                      max_size=4),
    max_leaves=12,
)
mappings = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=6)
dotted = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)
override = (st.tuples(dotted, st.text(max_size=15)).map("=".join)
            | st.tuples(dotted, values).map(lambda kv: f"{kv[0]}={yaml.safe_dump(kv[1])}")
            | st.text(max_size=20))


def _check_config(cls: type, text: str | None, overrides: list[str]) -> None:
    fd, name = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(text or "")
        load_config(cls, Path(name) if text is not None else None, overrides)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
    except NasError as exc:  # only a config's own validate() may raise another project error
        pytest.fail(f"{type(exc).__name__} instead of ConfigError: {exc}")
    finally:
        Path(name).unlink(missing_ok=True)


@FUZZ
@given(st.sampled_from(CLASSES), mappings, st.lists(override, max_size=3))
def test_config_random_mappings(cls: type, data: dict, overrides: list[str]):
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    _check_config(cls, text, overrides)


@FUZZ
@given(st.sampled_from(CLASSES), st.text(max_size=200))
def test_config_arbitrary_yaml_text(cls: type, text: str):
    _check_config(cls, text, [])


@FUZZ
@given(st.sampled_from(CLASSES), st.lists(override, max_size=5))
def test_config_arbitrary_overrides(cls: type, overrides: list[str]):
    _check_config(cls, None, overrides)


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch MARKER']\n",
        "name: !!python/name:os.system\n",
        "a: &x [*x]\n",
        "[" * 5000 + "]" * 5000 + "\n",
        "batch_size: 1" + "0" * 400 + "\n",
        "lr: 1" + "0" * 400 + "\n",
    ],
)
def test_config_hostile_yaml(text: str):
    for cls in CLASSES:
        _check_config(cls, text.replace("MARKER", str(MARKER)), [])
    assert not MARKER.exists()
