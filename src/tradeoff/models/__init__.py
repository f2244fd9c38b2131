"""Models by name. Every model is a :class:`FeatureClassifier`: ``features`` (everything up to
the penultimate representation, which the backdoor defences read) then a linear ``classifier``."""

from tradeoff.models import cnn, ibp, resnet  # noqa: F401  (register the models)
from tradeoff.models.base import MODELS, FeatureClassifier, build_model, model_for
from tradeoff.models.denoise import NonLocalDenoise
from tradeoff.models.mode import model_mode

__all__ = ["MODELS", "FeatureClassifier", "build_model", "model_for", "model_mode", "NonLocalDenoise"]
