"""The smallest real run the backdoor-defence tests train: scikit-learn's digits, a dirty-label
2x2 sticker on 5% of the training set, 2 epochs, no adversarial evaluation (seconds on a CPU)."""

TINY = {
    "data": {"dataset": "digits"},
    "trigger": {"kind": "sticker", "size": 2},
    "poison": {"method": "dirty-label", "fraction_of_training_set": 0.05},
    "train": {"epochs": 2, "batch_size": 50},
    "eval": {"adversarial": False},
}
