"""Evaluation jobs over a fixed genotype: retraining (:mod:`.train`, ``nas train``), the
deploy report (:mod:`.deploy_report`), export (:mod:`.export`), the comparison against the
DARTS baselines (:mod:`.compare`, :mod:`.significance`, its table :mod:`.table`) and the
HTML report (:mod:`.report`).

Import the module you need: the package imports nothing, so ``nas report`` stays free of
torch.
"""
