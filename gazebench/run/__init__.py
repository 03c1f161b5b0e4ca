"""The run: request, pairs, rows, references, priors, engine and store.

It computes maps and scores and writes them to the run directory (``store``), nothing more;
``gazebench.aggregate`` reads the store and ``gazebench.report`` writes what people read.
Only the two front doors (``gazebench.cli``, ``gazebench.api``) import the engine.
"""
