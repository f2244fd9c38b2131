"""Models by name. Every model is a :class:`FeatureClassifier`: ``features`` (everything up to
the penultimate representation, which the backdoor defences read) then a linear ``classifier``."""

from tradeoff.models.base import MODELS, FeatureClassifier, build_model, model_for
from tradeoff.models import cnn as _cnn, resnet as _resnet  # noqa: F401  (register the models)
from tradeoff.models import ibp as _ibp  # noqa: F401
from tradeoff.models.denoise import NonLocalDenoise

__all__ = ["MODELS", "FeatureClassifier", "build_model", "model_for", "NonLocalDenoise"]
