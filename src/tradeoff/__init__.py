"""tradeoff: adversarial robustness versus backdoor robustness, reproducibly."""

__version__ = "0.2.0"

from tradeoff.config.build import load_spec  # noqa: E402
from tradeoff.core.errors import TradeoffError  # noqa: E402
from tradeoff.core.spec import Spec  # noqa: E402
from tradeoff.pipeline.experiment import run_experiment  # noqa: E402

__all__ = ["TradeoffError", "Spec", "load_spec", "run_experiment", "__version__"]
