"""Retraining, published baselines, comparison tables and Pareto plots."""
