"""dtf: a distributed testing framework for AI models on heterogeneous hardware."""

__version__ = "0.1.0"
