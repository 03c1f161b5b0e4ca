"""Metrics: map metrics against gaze, and (later) region analysis, localisation, statistics."""
