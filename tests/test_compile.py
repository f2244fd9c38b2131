"""``train.compile`` and ``train.channels_last``: the same training as eager, fp32 contiguous."""

import shutil

import pytest
import torch

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.data.batches import InMemoryBatches
from tradeoff.models import build_model
from tradeoff.training.loop import train_model

STEPS = 3


def pgd_training(compile_: bool = False, channels_last: bool = False) -> tuple[list, dict]:
    """(each step's loss, the final weights) of PGD training (3 attack steps) of the small CNN on
    16x16 images: one batch an epoch, so each epoch's mean loss is that step's loss."""
    spec = resolve(load_spec(None, {
        "data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
        "adversarial_defense": {"objective": "pgd", "attack": {"eps": 0.3, "step_size": 0.1, "steps": 3}},
        "train": {"steps": STEPS, "batch_size": 32, "device": "cpu", "compile": compile_,
                  "channels_last": channels_last}}))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    torch.manual_seed(1)
    model = build_model("small-cnn", (1, 16, 16), 10)
    torch.manual_seed(2)  # the attack's random starts
    result = train_model(model, InMemoryBatches(x, y, 32, False, 0), make_objective(spec), spec.train,
                         torch.device("cpu"), log=lambda m: None, show_progress=False)
    return [h[1] for h in result.history], {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_channels_last_trains_as_contiguous():
    """Against eager contiguous fp32 training: channels-last PGD training gives each step's loss to
    1e-5 and the same weights to 1e-5."""
    losses, weights = pgd_training()
    cl_losses, cl_weights = pgd_training(channels_last=True)
    assert cl_losses == pytest.approx(losses, abs=1e-5)
    for k in weights:
        assert torch.allclose(cl_weights[k], weights[k], atol=1e-5), k


@pytest.mark.slow  # compiling the model's graphs: a minute of one core
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C compiler")
def test_compiled_pgd_training_gives_the_eager_losses():
    """Against eager fp32 training: with ``train.compile`` (inductor on the CPU) PGD training gives
    each of 3 steps' losses to 1e-5 and the same weights to 1e-4; the attack's forward and input
    gradient run through the compiled module in eval mode and training's in train mode, with no
    graph break (the whole model is one graph each time)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    losses, weights = pgd_training()
    compiled_losses, compiled_weights = pgd_training(compile_=True)
    assert compiled_losses == pytest.approx(losses, abs=1e-5)
    for k in weights:
        assert torch.allclose(compiled_weights[k], weights[k], atol=1e-4), k
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # train mode, and the attack's eval mode
