"""Multi-objective search: one trial (:mod:`.trial`), its Optuna and Ray Tune drivers
(:mod:`.optuna_driver`, :mod:`.ray_driver`) and the Pareto outputs (:mod:`.outputs`)."""
