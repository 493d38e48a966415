"""Shipped job configs (YAML): search/, train/, compare/, mo/."""
