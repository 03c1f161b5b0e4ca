"""``model_heatmap``: the model's own predicted gaze or heatmap, scored like any saliency map.

Three seed models predict a heatmap beside their classes: the ``unet_gaze`` decoder (Karargyris
et al. 2021), the ``densenet_aug`` gaze head (Kim et al.) and the ``heatmap_generator``
generator (Watanabe et al. 2022, who claim that these masks resemble radiologists' gaze).  Each
adapter exposes it as ``gaze_head`` (preprocessed input -> heatmap logits [B, 1, S, S]); all three
are trained against gaze through a sigmoid (BCE with logits, or MSE of the sigmoid), so the
predicted heatmap is ``sigmoid(logits)``, in [0, 1].  The map does not depend on the target class:
it is what the model says a radiologist looks at.  Models without a heatmap refuse it (pre-flight);
``all`` then leaves it out and run.log says so.
"""

from __future__ import annotations

import torch

from gazebench.errors import UserError
from gazebench.methods.base import Method
from gazebench.registry import METHODS


@METHODS.register("model_heatmap")
class ModelHeatmap(Method):
    """sigmoid(gaze head logits) of models that predict gaze: one forward pass, no gradient."""

    name = "model_heatmap"
    postprocess = "abs"  # already in [0, 1]
    default_params: dict = {}
    family = "model"
    library = "gazebench"

    def passes(self):
        return 1, 0

    def check_model(self, adapter) -> None:
        if adapter.gaze_head is None:
            raise UserError(f"model_heatmap: model {adapter.name} predicts no heatmap of its own (unet_gaze, densenet_aug and heatmap_generator do)")

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        self.check_model(adapter)
        with torch.no_grad():
            return adapter.gaze_head(inputs).sigmoid()
