"""The plugin-author kit: the booster teacher base, input checks, attribution, loss helpers."""
