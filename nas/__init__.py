"""nas: neural architecture search over efficient convolution operators.

Subpackages: ``nas.ops`` (operators), ``nas.spaces`` (search spaces), ``nas.search``
(DARTS supernet, Optuna, Ray Tune), ``nas.evaluate`` (retrain, deploy, compare).
Core modules: ``genotype``, ``network``, ``data``, ``cost``, ``deploy``, ``config``, ``train``.
"""

__version__ = "0.1.0"
