"""Recipes and the seed studies' reported numbers, installed as the package ``gazebench.baselines``."""
