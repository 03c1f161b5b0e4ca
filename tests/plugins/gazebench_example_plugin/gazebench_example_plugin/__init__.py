"""An example gazebench plugin (docs/plugins.md): a method, a metric, a model and a dataset, registered by entry points."""
