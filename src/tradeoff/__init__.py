"""tradeoff: adversarial robustness versus backdoor robustness, reproducibly."""

from tradeoff.errors import TradeoffError
from tradeoff.spec import Spec, load_spec

__all__ = ["TradeoffError", "Spec", "load_spec", "run_experiment"]
__version__ = "0.1.0"


def run_experiment(spec, out_dir=None, **kwargs):
    """Run one experiment (see tradeoff.experiment.run_experiment)."""
    from tradeoff.experiment import run_experiment as _run

    return _run(spec, out_dir=out_dir, **kwargs)
