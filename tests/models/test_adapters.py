"""One way to build a model: network_adapter, the input-size rule, ModelSpec's declared capabilities."""

import pytest
import torch
from torch import nn

from gazebench.errors import UserError
from gazebench.models.adapters import WeightsDoNotFit, check_input_size, network_adapter
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec


class Tiny(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, n_classes)

    @property
    def cam_layer(self) -> nn.Module:
        return self.features

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_network_adapter_loads_weights_and_takes_the_networks_cam_layer():
    torch.manual_seed(0)
    source = Tiny(2)
    adapter = network_adapter(Tiny(2), "tiny", ("a", "b"), {"input_size": 16}, source.state_dict())
    assert adapter.class_names == ["a", "b"] and adapter.input_size == 16 and adapter.cam_layer is adapter.module.features
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in adapter.module.state_dict().items())
    named = network_adapter(Tiny(2), "tiny", ["a", "b"], {"input_size": 16}, cam_layer=adapter.module.head)
    assert named.cam_layer is adapter.module.head


def test_class_names_weights_and_input_size_are_checked_in_one_line():
    with pytest.raises(UserError, match=r"class names must be a non-empty list without repeats, got \['a', 'a'\]"):
        network_adapter(Tiny(2), "tiny", ["a", "a"], {"input_size": 16})
    with pytest.raises(WeightsDoNotFit, match=r"^the weights do not fit tiny: Error\(s\) in loading state_dict for Tiny:$") as error:
        network_adapter(Tiny(3), "tiny", ["a", "b", "c"], {"input_size": 16}, Tiny(2).state_dict())
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="^tiny: input_size must be a positive multiple of 32, got 0$"):
        check_input_size("tiny", 0, 32)
    check_input_size("tiny", 64, 32)


def test_a_spec_without_a_recipe_says_why_and_refuses_training():
    build = lambda **kwargs: None  # noqa: E731
    with pytest.raises(ValueError, match="say why in not_trained"):
        ModelSpec(name="m", build_adapter=build, default_recipe=None, loss=classification_loss)
    spec = ModelSpec(name="m", build_adapter=build, default_recipe=None, loss=classification_loss, not_trained="a borrowed model")
    assert not spec.trainable and spec.open_for_run is None
    with pytest.raises(UserError, match=r"^m is a borrowed model and gazebench does not train it; run it directly: gazebench run --model m --data egd$"):
        spec.recipe_for("egd")
