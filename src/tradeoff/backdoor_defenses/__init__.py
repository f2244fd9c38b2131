"""Backdoor defences by name, run as steps after training (see tradeoff.experiment) or on a
finished run folder (``tradeoff defend``).

Each defence is one module registered with the dataclass of its options; a spec entry
``{name: spectral, variant: textbook, ...}`` is checked against that dataclass when the spec is
validated (unknown or mistyped options are one clear error before any training starts). A defence
receives the :class:`~tradeoff.handoff.TrainedRun`, returns a flat dict of metrics prefixed with
its own short name (``spectral_``, ``clustering_``, ``cleanse_``, its options' ``metric_prefix``)
and may leave tensors for the run folder with ``run.add_artifact``. A defence that raises is
reported by :func:`try_backdoor_defense` as one sentence under ``<prefix>_error``.
"""

from tradeoff.backdoor_defenses.base import (BACKDOOR_DEFENSES, check_entry, metric_prefix, parse_options,
                                             run_backdoor_defense, try_backdoor_defense)
from tradeoff.backdoor_defenses import cleanse, clustering, spectral  # noqa: F401  (register the defences)

__all__ = ["BACKDOOR_DEFENSES", "check_entry", "metric_prefix", "parse_options", "run_backdoor_defense",
           "try_backdoor_defense"]
