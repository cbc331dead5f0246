"""rlhf: a Hydra-configured experiment framework for RLHF of language models."""

__version__ = "0.1.0"
