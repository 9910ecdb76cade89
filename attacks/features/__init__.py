"""White-box attack features (Nasr et al. 2019): per record and snapshot, layer outputs,
loss, one-hot label and per-example gradients of chosen layers, computed in batches.

Independent of Flower: takes a plain ``nn.Module`` and arrays.
"""

from attacks.features.extract import extract_features, iter_features
from attacks.features.featureset import FeatureSet
from attacks.features.layers import SAMPLERS, gradient_layers

__all__ = ["FeatureSet", "SAMPLERS", "extract_features", "gradient_layers", "iter_features"]
