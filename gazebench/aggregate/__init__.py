"""Aggregation of stored runs: statistics, leaderboard and ranking, comparisons, breakdowns, region analysis.

Reads only the run store (``gazebench.run.store``) and the ground floor; never the engine.
"""
