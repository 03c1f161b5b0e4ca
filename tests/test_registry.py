"""Registries: decorators, entry-point plugins from other packages, clear unknown-name errors."""

import sys
import textwrap

import pytest

from gazebench.errors import UserError
from gazebench.registry import METHODS, Registry


def test_decorator_registers_and_lists_sorted():
    registry = Registry("methods")
    registry.register("b")(type("B", (), {}))
    registry.register("a")(type("A", (), {}))
    assert registry.names() == ["a", "b"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(type("Other", (), {}))


def test_unknown_name_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown method 'nope'; choose one of: conductance, deeplift, gradcam, gradshap, saliency, smoothgrad"):
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
