"""fedsec: a Flower-based toolkit for security research in federated learning.

The library half of the project: everything that is not a Flower adapter lives
here (data, models, the training loop, aggregation math, attacks, defenses,
metrics and run records).  Nothing in this package imports Flower's server or
client classes, so its math is testable on plain numpy arrays and torch tensors.
"""

__version__ = "0.1.0"
