"""Training: the loop shared by every model family (``loop``), jobs that train and find the model a run
uses (``jobs``), recipes read from ``gazebench/resources/recipes/`` (``recipes``) and training-time
augmentation (``augment``)."""
