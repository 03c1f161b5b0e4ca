"""Model adapters and the seed studies' architectures; training loop and losses."""
