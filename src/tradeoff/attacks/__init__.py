"""Attacks on a trained model: the one PGD (training, evaluation and the defences use it), the
spatial worst case (rotations and translations) and AutoAttack."""
