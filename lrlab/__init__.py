"""lrlab: an experiment harness for SGD on linear regression (d2l §3.2 and §3.3)."""

__version__ = "0.1.0"
