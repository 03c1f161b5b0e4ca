"""gazebench/resources: one recipe file per registered model, and the studies' reported numbers."""

import yaml

from gazebench.models.training.recipes import read_recipes
from gazebench.registry import MODELS
from gazebench.resources import resource


def test_every_registered_model_has_a_paper_or_set_recipe_and_an_embedded_one():
    for name in [n for n in MODELS.names() if ":" not in n]:
        recipes = read_recipes(name)
        assert "embedded" in recipes, name
        assert any(key == "paper" or key.startswith("set") for key in recipes), name
        for recipe in recipes.values():
            assert {"model", "loss", "training"} <= set(recipe), name
            assert recipe["training"]["epochs"] >= 1 and recipe["training"]["batch_size"] >= 1


def test_reported_numbers_are_machine_readable():
    reported = yaml.safe_load(resource("reported", "reported.yaml").read_text(encoding="utf-8"))
    auroc = reported["karargyris2021"]["auroc"]
    assert auroc["unet_gaze"] == {"Normal": 0.906, "CHF": 0.889, "pneumonia": 0.789, "mean": 0.861}
    assert reported["watanabe2022"]["auroc"]["heatmap_generator_best"]["mean"]["ci95"] == [0.860, 0.966]
    assert reported["mimic2023"]["gaze_agreement_change_vs_plain_model"] == {"kl": -0.90, "nss": 2.16}
