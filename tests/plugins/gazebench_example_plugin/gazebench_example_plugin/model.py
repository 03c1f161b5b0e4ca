"""``small_cnn``: a two-block CNN on the grey radiograph, trained with gazebench's generic recipe."""

from __future__ import annotations

from torch import nn

from gazebench.models.adapters import network_adapter
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec
from gazebench.models.training.recipes import generic_recipe

NAME = "small_cnn"


class SmallCNN(nn.Module):
    """Conv-ReLU-pool-Conv-ReLU, global average pool, Linear: preprocessed input [B, 1, S, S] -> logits [B, C]."""

    def __init__(self, n_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes))

    @property
    def cam_layer(self) -> nn.Module:
        """The last feature map (stride 2), which the head pools: what CAM methods explain."""
        return self.features

    def forward(self, x):
        return self.head(self.features(x))


def build_adapter(class_names, state_dict=None, input_size: int = 64, width: int = 8):
    """The adapter: one input channel, the radiograph in [0, 1] normalised with mean 0.5 and std 0.25."""
    config = {"input_size": input_size, "width": width}  # saved in checkpoints, passed back on loading
    return network_adapter(SmallCNN(len(class_names), width), NAME, class_names, config, state_dict, mean=(0.5,), std=(0.25,))


SPEC = ModelSpec(
    name=NAME,
    build_adapter=build_adapter,
    default_recipe=generic_recipe,  # gazebench's plain classifier recipe: input 128 on the embedded data, 224 on real data
    loss=classification_loss,  # BCE with logits against the labels, unknown labels left out
    description="small_cnn (example plugin): two conv blocks, global average pool, Linear; BCE",
)
