"""attnbench: what an attention mechanism costs and what it buys."""

__version__ = "0.1.0"
