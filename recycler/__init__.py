"""recycler: search linear merges of a checkpoint pool for the Pareto front of capabilities.

The data path, one module each: spec -> pool -> space -> merge -> evaluate -> search -> front -> export.
"""

__version__ = "0.1.0"
