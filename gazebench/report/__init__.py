"""Figures and the HTML report, drawn from what runs write (never from the maps in memory)."""
