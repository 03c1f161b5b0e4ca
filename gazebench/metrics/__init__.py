"""Metrics: map metrics against gaze, localisation, region analysis and the statistics of the leaderboard."""
