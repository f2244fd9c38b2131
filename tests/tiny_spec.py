"""The smallest real run the backdoor-defence tests train: scikit-learn's digits, a dirty-label
2x2 sticker on 5% of the training set, 2 epochs, no adversarial evaluation (seconds on a CPU); and
the cheapest table the sweep tests run (one standard cell on 50 digits, one epoch, under a second
a seed)."""

TINY = {
    "data": {"dataset": "digits"},
    "trigger": {"kind": "sticker", "size": 2},
    "poison": {"method": "dirty-label", "fraction_of_training_set": 0.05},
    "train": {"epochs": 2, "batch_size": 50},
    "eval": {"adversarial": False},
}


def tiny_table(table_id: str) -> str:
    """A table YAML of one cheap standard-training cell on digits, named ``table_id``."""
    return f"""
id: {table_id}
table: Table 1(a)
title: the cheapest table of the sweep tests
datasets: [digits]
layout: {{rows: [Adv. Defense]}}
metrics: {{Accuracy: accuracy}}
base:
  trigger: {{size: 2}}
  data: {{train_subset: 50, test_subset: 20}}
  train: {{epochs: 1, batch_size: 50}}
  eval: {{masking_checks: false, saliency: false, adversarial: false}}
cells:
  - setting: Adv. Defense=None (Std. Training)
    set: {{adversarial_defense: {{objective: none}}}}
"""
