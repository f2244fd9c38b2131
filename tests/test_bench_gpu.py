"""benchmarks/bench_gpu.py runs end to end (here on the CPU at its tiny budget) and writes every
field its GPU record needs."""

import json
import math

import pytest

from benchmark_script import load


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # three models, two objectives, two precisions, one cell: about 20 s of one core
def test_bench_gpu_tiny_on_the_cpu_writes_every_field(tmp_path):
    """``--device cpu --tiny``: every workload (small CNN, preact-resnet, ResNet-50), objective
    (standard, PGD) and precision (fp32, bf16 with channels_last) has a row whose throughputs and
    toolkit/bare ratios are positive finite numbers; the end-to-end Table 1(a) cell ran on the
    generated IDX files and trained; the paper's CIFAR-10 cell is projected from its measured
    seconds per step times its 100,000 steps; the JSON file holds the same."""
    bench = load("bench_gpu")
    result = bench.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "bench_gpu.json").read_text()) == json.loads(json.dumps(result))
    assert result["device"] == "cpu" and result["tiny"] and result["tf32"]["setting"] == "convolutions"
    rows = result["throughput"]
    seen = {(r["workload"], r["objective"], r["variant"]) for r in rows}
    assert seen == {(w, o, v) for w in ("mnist-small-cnn", "cifar10-preact-resnet", "resnet50-224")
                    for o in ("standard", "pgd-2") for v in ("fp32", "bf16+channels_last")}
    for r in rows:
        for key in ("toolkit_images_per_s", "bare_images_per_s", "ratio", "paired_ratio"):
            assert positive_finite(r[key]), (r["workload"], r["variant"], key, r[key])
        assert positive_finite(r["peak_mib"]["toolkit"]) and positive_finite(r["peak_mib"]["bare"])
    cell = result["table1a_mnist_adv_training_cpu_preset"]
    assert cell["cell"] == "table1a mnist adv-training s0" and cell["data"].startswith("generated IDX")
    assert cell["train_steps"] == 4 and 0 <= cell["accuracy"] <= 1 and positive_finite(cell["wall_seconds"])
    projection = result["paper_cifar10_adv_training_projection"]
    assert projection["model"] == "preact-resnet" and projection["steps"] == 100000
    assert projection["projected_hours"] == pytest.approx(projection["seconds_per_step"] * 100000 / 3600)
    assert positive_finite(projection["seconds_per_step"])
