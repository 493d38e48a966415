"""nas: neural architecture search over efficient convolution operators.

Layers, bottom to top (README "Layout"; ``lint-imports`` enforces them): the core (``ops``,
``data``, ``cost``, ``genotype``, ``network``, ``deploy``, ``loop``, ``run``, ``config``, ...),
``nas.spaces`` (search spaces, published genotypes), ``nas.evaluate`` (train, deploy,
export, compare, report), ``nas.search`` (DARTS supernet, Optuna, Ray Tune), ``nas.cli``.
"""

__version__ = "0.1.0"
