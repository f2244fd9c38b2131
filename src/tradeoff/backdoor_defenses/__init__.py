"""Backdoor defences by name, run as steps after training (see tradeoff.pipeline.experiment) or on a
finished run folder (``tradeoff defend``).

Each defence is one module registered with the dataclass of its options; a spec entry
``{name: spectral, variant: textbook, ...}`` is parsed into that dataclass once, when the spec is
built (unknown or mistyped options are one clear error before any training starts): the spec
holds :class:`~tradeoff.core.spec.BackdoorDefenseSpec` entries. A defence
receives the :class:`~tradeoff.records.handoff.TrainedRun`, returns a flat dict of metrics prefixed with
its own short name (``spectral_``, ``clustering_``, ``cleanse_``, its options' ``metric_prefix``)
and may leave tensors for the run folder with ``run.add_artifact``. A defence that raises is
reported by :func:`try_backdoor_defense` as one sentence under ``<prefix>_error``.
"""

from tradeoff.backdoor_defenses import (  # noqa: F401  (register the defences)
    anp,
    cleanse,
    clustering,
    fine_pruning,
    fine_tuning,
    ft_sam,
    ibau,
    nad,
    sau,
    spectral,
    strip,
)
from tradeoff.backdoor_defenses.base import (
    BACKDOOR_DEFENSES,
    as_entry,
    check_entry,
    metric_prefix,
    parse_entry,
    parse_options,
    run_backdoor_defense,
    try_backdoor_defense,
)

__all__ = ["BACKDOOR_DEFENSES", "as_entry", "check_entry", "metric_prefix", "parse_entry", "parse_options",
           "run_backdoor_defense", "try_backdoor_defense"]
