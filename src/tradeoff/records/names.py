"""The key names of a run record (``metrics.json``) that more than one module writes or reads:
the evaluation's headline metrics and the run's identity and flags. Every module names a metric
through these constants; :mod:`tradeoff.records.record` owns the record built from them."""

# The evaluation's metrics (fractions in [0, 1]).
ACCURACY = "accuracy"
ROBUSTNESS = "adversarial_robustness"
BACKDOOR_SUCCESS = "backdoor_success_rate"
BACKDOOR_SUCCESS_TRUE_LABEL = "backdoor_success_rate_true_label"
BACKDOOR_ROBUST_ACCURACY = "backdoor_robust_accuracy"
SALIENCY_SHARE = "trigger_saliency_share"

# The run's identity, flags and costs.
DATASET, POISONING_METHOD, ADVERSARIAL_DEFENSE = "dataset", "poisoning_method", "adversarial_defense"
COLLAPSED, COLLAPSE_REASON = "collapsed", "collapse_reason"
SYNTHETIC = "synthetic"
SPEC_DIGEST = "spec_digest"
SEED = "seed"
TRAIN_STEPS, TRAIN_IMAGES_PER_SECOND = "train_steps", "train_images_per_second"
DEFENSE_SECONDS = "backdoor_defense_seconds"
