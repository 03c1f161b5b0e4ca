"""A plugin that fails on import: it needs a name this gazebench does not have (ImportError)."""

from gazebench.methods.base import MethodFromTheFuture  # ImportError: this gazebench has no such name


class BrokenSaliency(MethodFromTheFuture):
    name = "broken_saliency"
