"""SONIC Gateway: a federated, authenticated, multi-facility inference gateway for Triton."""

__version__ = "0.1.0"
