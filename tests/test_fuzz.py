"""Fuzzed readers and spec builder (Hypothesis): random YAML mappings and ``--set`` strings into
the spec builder, random byte mutations and truncations of IDX files, CIFAR-10 batches and
safetensors checkpoints into their readers. Each input ends in a valid result or a
:class:`TradeoffError` sentence: never another exception, never a hang (a deadline per example
and an alarm per test), never unbounded memory (the address space is capped while they run).

The profile (tests/conftest.py) is derandomised under CI; together these tests take about a
minute on an idle core."""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import pickle
import resource
import signal
import tempfile
import typing
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save

from tradeoff.config.build import load_spec, parse_overrides, spec_from_dict
from tradeoff.core.checkpoints import load_state
from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import _ALL as REGISTRIES
from tradeoff.core.spec import SECTIONS, Spec
from tradeoff.data.builtin import read_idx_pair
from tradeoff.data.files import read_cifar_batch

ADDRESS_SPACE_HEADROOM = 2 << 30  # bytes the code under test may allocate beyond what is mapped already
TEST_ALARM_SECONDS = 240  # a hang fails the test instead of stalling the suite


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


@contextmanager
def bounded():
    """The address space capped a little above its current size, and an alarm: an input that
    would allocate without bound raises MemoryError (which fails the test), one that hangs raises
    TimeoutError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped_bytes() + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))

    def hang(signum, frame):
        raise TimeoutError("a fuzzed input hung the reader")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(TEST_ALARM_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def memory_bound():
    with bounded():
        yield


def ends_in_a_result_or_a_sentence(call):
    """``call()``'s result, or None when it raised a TradeoffError whose message is one sentence."""
    try:
        return call()
    except TradeoffError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message, message
        return None


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------- the spec builder


def _vocabulary() -> tuple[list[str], list[str]]:
    """Every spec key (sections, fields, each component's options) and every registered name."""
    keys = set(SECTIONS) | {f.name for f in dataclasses.fields(Spec)} | {"base", "defense", "name"}
    for cls in SECTIONS.values():
        keys |= {f.name for f in dataclasses.fields(cls)}
    names = set()
    for registry in REGISTRIES.values():
        for entry in registry.entries():
            names.add(entry.name)
            if entry.options is not None:
                keys |= {f.name for f in dataclasses.fields(entry.options)}
    keys.discard("root")  # a data root would send the builder to the disk; it is a plain string
    return sorted(keys), sorted(names)


KEYS, NAMES = _vocabulary()


def assert_sane(spec) -> None:
    """What a built spec guarantees the steps after it: a run name that stays inside the output
    folder, whole numbers a tensor can hold, finite numbers."""
    if spec is None:
        return
    assert isinstance(spec, Spec)
    assert spec.name and "/" not in spec.name and not spec.name.startswith(".")

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, float):
            assert math.isfinite(value), value
        elif isinstance(value, int) and not isinstance(value, bool):
            assert abs(value) < 2**63, value

    walk(spec.to_dict())
EDGES = ["", ".", "..", "a/b", "../outside", ".hidden", "1e-4", "none", 2**63, -2**63 - 1, 10**30, 1e308,
         float("inf"), float("-inf"), float("nan"), -1, 0, 0.5, [], {}]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(NAMES), st.sampled_from(EDGES))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def _typed(hint):
    """Mostly values of the field's own type (edge values among them), sometimes anything."""
    hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # Optional[X] -> X
    own = {int: st.one_of(st.integers(-3, 200), st.sampled_from([2**63, -2**63 - 1, 10**30])),
           float: st.one_of(st.floats(-10, 10), st.sampled_from([float("inf"), float("nan"), 1e308, -0.0])),
           bool: st.booleans(), str: st.one_of(st.sampled_from(NAMES), st.sampled_from(EDGES[:8]), st.text(max_size=8)),
           list: st.lists(st.lists(st.one_of(st.integers(0, 5), st.floats()), max_size=3), max_size=3)}.get(hint)
    return values if own is None else st.one_of(own, own, own, values)


def _fields(cls) -> dict:
    """Field name -> strategy for a section: its own fields and every option of its components."""
    out = {}
    registry = REGISTRIES.get(getattr(cls, "registry", ""))
    for owner in [cls] + [e.options for e in (registry.entries() if registry else []) if e.options is not None]:
        hints = typing.get_type_hints(owner)
        for f in dataclasses.fields(owner):
            if f.name not in ("options", "root"):
                out[f.name] = (st.fixed_dictionaries({}, optional=_fields(hints[f.name]))
                               if dataclasses.is_dataclass(hints[f.name]) else _typed(hints[f.name]))
    return out


def _section(cls):
    fields = _fields(cls)
    return st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: fields[n] for n in names}))


# Mostly well-shaped specs (a few sections, each with a few of its own keys or its components'
# options, values mostly of the field's type), so that the builder's deeper checks are reached;
# arbitrary mappings among them.
sections = {name: _section(cls) for name, cls in SECTIONS.items()}
top_level = {f.name: _typed(typing.get_type_hints(Spec)[f.name]) for f in dataclasses.fields(Spec)
             if f.name not in SECTIONS}
specs = st.one_of(st.lists(st.sampled_from(sorted({**sections, **top_level})), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: {**sections, **top_level}[n] for n in names})),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6))


@settings(FUZZ, max_examples=50)
@given(raw=specs)
def test_random_yaml_mappings_build_a_spec_or_a_sentence(raw, memory_bound):
    """A random mapping of spec keys to random values, as a YAML file, through ``load_spec``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        spec = ends_in_a_result_or_a_sentence(lambda: load_spec(path))
    assert_sane(spec)


@FUZZ
@given(raw=specs)
def test_random_mappings_into_spec_from_dict(raw, memory_bound):
    assert_sane(ends_in_a_result_or_a_sentence(lambda: spec_from_dict(raw)))


dotted = st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), min_size=1, max_size=3).map(".".join)
set_strings = st.one_of(st.builds(lambda k, v: f"{k}={v}", dotted, st.one_of(
    st.text(max_size=20), scalars.map(lambda v: yaml.safe_dump(v).split("\n...")[0].strip()))), st.text(max_size=30))


@FUZZ
@given(pairs=st.lists(set_strings, max_size=5))
def test_random_set_strings_build_a_spec_or_a_sentence(pairs, memory_bound):
    """Random ``--set`` strings (keys from the spec's vocabulary or not, values as YAML or not)."""
    assert_sane(ends_in_a_result_or_a_sentence(lambda: load_spec(None, pairs)))


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ntrain: {{epochs: *a{levels - 1}}}\n"


@pytest.mark.parametrize("text,fragment", [
    (_alias_bomb(), "expands to more than"),
    ("a: &a [*a]\n", "contains itself"),
    ("x: " + "[" * 200 + "]" * 200 + "\n", "nests deeper than"),
    ("train: {epochs: 1}\n" + "#" * (2 << 20), "larger than"),
])
def test_hostile_yaml_is_refused_quickly_and_in_bounded_memory(tmp_path, memory_bound, text, fragment):
    """A billion-laughs alias bomb (9^9 values once expanded), a self-referencing alias, deep
    nesting and an oversized file: refused before anything walks them, in a spec file and in --set."""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(TradeoffError, match=fragment):
        load_spec(path)
    if len(text) < 1 << 20:
        assert isinstance(parse_overrides([f"name={text}"])["name"], str)  # not expanded: kept as text


# --------------------------------------------------------------------------- the data readers


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


IMAGES = _idx_bytes(np.random.default_rng(0).integers(0, 256, (6, 28, 28)))
LABELS = _idx_bytes(np.arange(6) % 10)


def mutated(original: bytes, header: int):
    """``original`` with random bytes changed (half of them in its first ``header`` bytes, where
    the structure is), random bytes inserted, then cut to a random length."""
    edits = st.lists(st.tuples(st.one_of(st.integers(0, header - 1), st.integers(0, len(original) - 1)),
                               st.integers(0, 255)), max_size=6)
    return st.builds(_apply, st.just(original), edits, st.lists(st.binary(min_size=1, max_size=8), max_size=2),
                     st.one_of(st.none(), st.integers(0, len(original))))


def _apply(original: bytes, edits, inserts, cut) -> bytes:
    data = bytearray(original)
    for position, value in edits:
        data[position] = value
    for insert in inserts:
        data[len(data) // 2:len(data) // 2] = insert
    return bytes(data[:cut] if cut is not None else data)


@FUZZ
@given(images=mutated(IMAGES, 16), labels=mutated(LABELS, 8), gz=st.booleans())
def test_mutated_idx_files_read_or_fail_in_one_sentence(images, labels, gz, memory_bound):
    with tempfile.TemporaryDirectory() as folder:
        suffix = ".gz" if gz else ""
        paths = Path(folder) / f"images{suffix}", Path(folder) / f"labels{suffix}"
        for path, raw in zip(paths, (images, labels)):
            path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
        result = ends_in_a_result_or_a_sentence(lambda: read_idx_pair(*paths, "MNIST"))
    if result is not None:
        x, y = result
        assert x.shape[1:] == (28, 28) and len(x) == len(y) and (y < 10).all()


@FUZZ
@given(raw=mutated(gzip.compress(LABELS, mtime=0), 24))
def test_mutated_gzip_streams_read_or_fail_in_one_sentence(raw, memory_bound):
    """Damage inside the compressed stream itself (header, deflate blocks, checksum)."""
    with tempfile.TemporaryDirectory() as folder:
        images, labels = Path(folder) / "images", Path(folder) / "labels.gz"
        images.write_bytes(IMAGES)
        labels.write_bytes(raw)
        ends_in_a_result_or_a_sentence(lambda: read_idx_pair(images, labels, "MNIST"))


def _cifar_bytes(protocol: int) -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    pickle.dump({b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4, 1],
                 b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"filenames": [b"a.png"] * 4},
                buffer, protocol=protocol)
    return buffer.getvalue()


@FUZZ
@given(raw=st.one_of(mutated(_cifar_bytes(2), 200), mutated(_cifar_bytes(4), 200)))
def test_mutated_cifar_batches_read_or_fail_in_one_sentence(raw, memory_bound):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data_batch_1"
        path.write_bytes(raw)
        result = ends_in_a_result_or_a_sentence(lambda: read_cifar_batch(path))
    if result is not None:
        x, y = result
        assert x.shape[1:] == (3, 32, 32) and x.dtype == np.uint8 and len(x) == len(y) and ((y >= 0) & (y < 10)).all()


CHECKPOINT = save({"conv.weight": torch.randn(4, 1, 3, 3), "conv.bias": torch.zeros(4),
                   "bn.num_batches_tracked": torch.tensor(3)}, metadata={"format": "pt"})


@FUZZ
@given(raw=mutated(CHECKPOINT, 8 + int.from_bytes(CHECKPOINT[:8], "little")))
def test_mutated_safetensors_checkpoints_load_or_fail_in_one_sentence(raw, memory_bound):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(raw)
        state = ends_in_a_result_or_a_sentence(lambda: load_state(path))
    if state is not None:
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
