"""Registries: decorators, entry-point plugins from other packages, clear unknown-name errors."""

import sys
import textwrap

import pytest

from gazebench.errors import UserError
from gazebench.registry import METHODS, Registry, choices_phrase


def test_decorator_registers_and_lists_sorted():
    registry = Registry("methods")
    registry.register("b")(type("B", (), {}))
    registry.register("a")(type("A", (), {}))
    assert registry.names() == ["a", "b"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(type("Other", (), {}))


def test_unknown_name_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown method 'nope'; choose one of: conductance, deeplift, eigencam, gradcam, gradcam_plus_plus, gradshap, "):
        METHODS.get("nope")


def test_resolve_list_keeps_order_and_expands_all():
    assert METHODS.resolve_list("gradcam, saliency") == ["gradcam", "saliency"]
    assert METHODS.resolve_list("all") == METHODS.names()


def test_entry_point_plugin_from_another_package(tmp_path, monkeypatch):
    """A package that declares [gazebench.methods] in its metadata is found without importing it first."""
    (tmp_path / "my_plugin.py").write_text(
        textwrap.dedent(
            """
            from gazebench.methods.base import Method

            class EdgeMethod(Method):
                name = "edges"
                postprocess = "abs"

                def attribute(self, adapter, inputs, targets, seeds):
                    return inputs[:, :, 1:, 1:] - inputs[:, :, :-1, :-1]
            """
        )
    )
    dist_info = tmp_path / "my_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[gazebench.methods]\nedges = my_plugin:EdgeMethod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("methods")  # a fresh registry: loads entry points on first use
    assert registry.names() == ["edges"]
    assert registry.get("edges").__name__ == "EdgeMethod"
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)


# --- prefix families ------------------------------------------------------------------------


def family_registry():
    """A registry with one fixed name and a prefix family that builds strings and refuses 'bad'."""
    registry = Registry("models")
    registry.register("fixed")(type("Fixed", (), {}))
    built = []

    @registry.register_prefix("zoo", placeholder="animal")
    def zoo(rest):
        if rest == "bad":
            raise LookupError("the zoo has no 'bad'; choose one of: cat, dog")
        built.append(rest)
        return f"entry for {rest}"

    return registry, built


def test_prefix_family_builds_entries_on_demand_and_caches_them():
    registry, built = family_registry()
    assert registry.get("zoo:cat") == "entry for cat"
    assert registry.get("zoo:cat") == "entry for cat"
    assert built == ["cat"]  # built once
    assert registry.get("fixed").__name__ == "Fixed"


def test_names_list_fixed_names_and_family_patterns_but_all_expands_to_fixed_names():
    registry, _ = family_registry()
    registry.get("zoo:cat")
    assert registry.names() == ["fixed", "zoo:<animal>"]  # built entries are not listed
    assert registry.resolve_list("all") == ["fixed"]
    assert registry.resolve_list("zoo:dog, fixed") == ["zoo:dog", "fixed"]


def test_unknown_prefix_and_refused_names_are_one_line_user_errors():
    registry, _ = family_registry()
    with pytest.raises(UserError, match=r"^unknown model prefix 'zo:' in 'zo:cat'; choose one of: fixed, zoo:<animal>$"):
        registry.get("zo:cat")
    with pytest.raises(UserError, match=r"^unknown model 'zoo:bad': the zoo has no 'bad'; choose one of: cat, dog$"):
        registry.get("zoo:bad")
    with pytest.raises(UserError, match=r"^model 'zoo:' names no animal; write zoo:<animal>$"):
        registry.get("zoo:")
    with pytest.raises(UserError, match=r"^unknown model 'nope'; choose one of: fixed, zoo:<animal>$"):
        registry.get("nope")


def test_contains_asks_the_family():
    registry, _ = family_registry()
    assert "fixed" in registry and "zoo:cat" in registry
    assert "zoo:bad" not in registry and "zo:cat" not in registry and "nope" not in registry


def test_a_prefix_registers_once():
    registry, _ = family_registry()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_prefix("zoo")(lambda rest: rest)
    with pytest.raises(ValueError, match="free of ':'"):
        registry.register_prefix("a:b")


def test_choices_phrase_lists_short_catalogues_and_close_matches_of_long_ones():
    assert choices_phrase(["a", "b"], "c") == "choose one of: a, b"
    many = [f"resnet{n}" for n in range(100)]
    phrase = choices_phrase(many, "resnet5x", limit=60, listing="see the docs")
    assert phrase.startswith("close matches: resnet5")
    assert phrase.endswith("100 names in all (see the docs)")


def test_the_model_registry_offers_the_generic_families():
    from gazebench.registry import MODELS

    assert {"torchvision:<name>", "timm:<name>", "xrv:<weights>"} <= set(MODELS.names())
    assert "torchvision:resnet18" in MODELS and "torchvision:resnet5" not in MODELS
