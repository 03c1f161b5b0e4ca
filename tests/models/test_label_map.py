"""Label maps: mapped logits are means of model logits; the default EGD map; user files; the errors."""

import pytest
import torch
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.cam import GradCamMethod
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import (
    MINUS_MEAN_OF_ALL,
    LabelMap,
    MappedClassifier,
    default_label_map,
    label_map_record,
    map_adapter,
)

CLASSES = ["Normal", "CHF", "pneumonia"]
CHEXPERT_STYLE = ["No Finding", "Edema", "Cardiomegaly", "Pneumonia", "Consolidation", "Effusion"]
XRV_STYLE = ["Atelectasis", "Consolidation", "Edema", "Effusion", "Pneumonia", "Cardiomegaly"]  # no "No Finding"
SIZE = 16


class TinyNet(nn.Module):
    def __init__(self, n_outputs: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, n_outputs)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def adapter_for(outputs: list[str]) -> ModelAdapter:
    torch.manual_seed(0)
    network = TinyNet(len(outputs)).eval()
    return ModelAdapter("tiny", network, list(outputs), network.features, SIZE)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def logits_by_name(adapter: ModelAdapter, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        logits = adapter.logits(x)
    return {name: logits[:, index] for index, name in enumerate(adapter.class_names)}


def test_default_egd_map_gives_each_class_the_mean_of_its_outputs_logits():
    model = adapter_for(CHEXPERT_STYLE)
    mapped = map_adapter(model, CLASSES)
    x = images()
    original, result = logits_by_name(model, x), logits_by_name(mapped, x)
    assert mapped.class_names == CLASSES
    torch.testing.assert_close(result["Normal"], original["No Finding"])
    torch.testing.assert_close(result["CHF"], (original["Edema"] + original["Cardiomegaly"]) / 2)
    torch.testing.assert_close(result["pneumonia"], (original["Pneumonia"] + original["Consolidation"]) / 2)
    record = label_map_record(mapped)
    assert record["source"] == "default label map 'egd'"
    assert record["classes"] == {"Normal": ["No Finding"], "CHF": ["Edema", "Cardiomegaly"], "pneumonia": ["Pneumonia", "Consolidation"]}


def test_without_no_finding_normal_is_minus_the_mean_of_all_logits():
    model = adapter_for(XRV_STYLE)
    mapped = map_adapter(model, CLASSES)
    x = images()
    with torch.no_grad():
        all_logits = model.logits(x)
    torch.testing.assert_close(logits_by_name(mapped, x)["Normal"], -all_logits.mean(dim=1))
    assert label_map_record(mapped)["classes"]["Normal"] == MINUS_MEAN_OF_ALL


def test_mapped_model_keeps_preprocessing_and_cam_layer_and_its_gradients_are_means():
    model = adapter_for(CHEXPERT_STYLE)
    mapped = map_adapter(model, CLASSES)
    assert isinstance(mapped.module, MappedClassifier) and mapped.module.network is model.module
    assert mapped.cam_layer is model.cam_layer and mapped.input_size == model.input_size and mapped.mean == model.mean
    x = model.preprocess(images()).requires_grad_()
    (gradient,) = torch.autograd.grad(mapped.module(x)[:, 1].sum(), x)  # CHF
    (edema,) = torch.autograd.grad(model.module(x)[:, 1].sum(), x)
    (cardiomegaly,) = torch.autograd.grad(model.module(x)[:, 2].sum(), x)
    torch.testing.assert_close(gradient, (edema + cardiomegaly) / 2)
    maps = GradCamMethod()(mapped, images(), torch.tensor([0, 1, 2]), [0, 1, 2], grid=SIZE)
    assert maps.shape == (3, SIZE, SIZE) and torch.isfinite(maps).all()
    assert not any(parameter is mapped.module.mapping for parameter in mapped.module.parameters())  # nothing to train


def test_same_classes_need_no_map():
    model = adapter_for(CLASSES)
    assert map_adapter(model, CLASSES) is model


def test_a_user_file_overrides_the_default(tmp_path):
    path = tmp_path / "my_map.yaml"
    path.write_text("classes:\n  Normal: No Finding\n  CHF: [Edema]\n  pneumonia: [Pneumonia, Consolidation, Effusion]\n")
    model = adapter_for(CHEXPERT_STYLE)
    mapped = map_adapter(model, CLASSES, mapping=path)
    x = images()
    original, result = logits_by_name(model, x), logits_by_name(mapped, x)
    torch.testing.assert_close(result["CHF"], original["Edema"])
    torch.testing.assert_close(result["pneumonia"], (original["Pneumonia"] + original["Consolidation"] + original["Effusion"]) / 3)
    assert label_map_record(mapped)["source"] == str(path)


def test_a_given_map_applies_even_when_the_classes_already_match():
    model = adapter_for(CLASSES)
    mapped = map_adapter(model, CLASSES, mapping={"classes": {"Normal": ["Normal"], "CHF": ["CHF", "pneumonia"], "pneumonia": ["pneumonia"]}})
    x = images()
    original = logits_by_name(model, x)
    torch.testing.assert_close(logits_by_name(mapped, x)["CHF"], (original["CHF"] + original["pneumonia"]) / 2)


def test_without_a_map_the_error_lists_both_class_lists_and_target_pred_passes_through():
    model = adapter_for(["Atelectasis", "Effusion"])
    with pytest.raises(UserError) as error:
        map_adapter(model, ["Lung Opacity", "No Finding"])
    message = str(error.value)
    assert message.startswith("model tiny predicts ['Atelectasis', 'Effusion'] but the data have classes ['Lung Opacity', 'No Finding']; ")
    assert "--label-map FILE" in message and "--target pred" in message and "\n" not in message
    assert map_adapter(model, ["Lung Opacity", "No Finding"], target="pred") is model


def test_a_default_map_that_does_not_fit_the_model_says_why():
    model = adapter_for(["No Finding", "Edema", "Pneumonia"])  # no Cardiomegaly, no Consolidation
    with pytest.raises(UserError, match=r"predicts \['No Finding', 'Edema', 'Pneumonia'\] but the data have classes \['Normal', 'CHF', 'pneumonia'\], and default label map 'egd': class 'CHF' needs model outputs \['Cardiomegaly'\], which the model lacks"):
        map_adapter(model, CLASSES)


def test_the_default_map_is_found_by_the_dataset_classes_in_any_order():
    label_map = default_label_map(["pneumonia", "Normal", "CHF"])
    assert label_map is not None and label_map.classes["CHF"] == ("Edema", "Cardiomegaly")
    assert label_map.fallbacks == {"Normal": MINUS_MEAN_OF_ALL}
    assert default_label_map(["Edema", "Effusion"]) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("Normal: [No Finding]\n", r"not a label map; expected YAML `classes: \{dataset class: \[model output names\]\}`"),
        ("classes:\n  Normal: []\n  CHF: [Edema]\n  pneumonia: [Pneumonia]\n", r"class 'Normal' must map to a list of model output names, got \[\]"),
        ("classes:\n  Normal: [No Finding]\n  CHF: [Edema]\n  pneumonia: [Pneumonia]\nfallbacks:\n  CHF: guess\n", r"unknown fallback 'guess' for 'CHF'; choose one of: minus_mean_of_all_outputs"),
        ("classes:\n  Normal: [No Finding]\n  CHF: [Edema]\n", r"maps \['Normal', 'CHF'\] but the data have classes \['Normal', 'CHF', 'pneumonia'\]; add \['pneumonia'\]"),
        ("classes:\n  Normal: [No Finding]\n  CHF: [Edema, Cardiomegally]\n  pneumonia: [Pneumonia]\n", r"class 'CHF' needs model outputs \['Cardiomegally'\], which the model lacks; the model's outputs are \['No Finding'"),
        ("classes: [unclosed\n", r"cannot parse label map"),
    ],
)
def test_bad_label_map_files_are_one_line_user_errors(tmp_path, text, message):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        map_adapter(adapter_for(CHEXPERT_STYLE), CLASSES, mapping=path)
    assert "\n" not in str(error.value)


def test_a_missing_label_map_file_says_how_to_write_one(tmp_path):
    with pytest.raises(UserError, match=r"label map file not found: .*nope.yaml; write one as YAML `classes:"):
        LabelMap.from_file(tmp_path / "nope.yaml")
