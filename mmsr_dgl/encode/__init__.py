"""Item text and images to feature matrices (`mmsr-dgl encode`); the encoders are an optional extra."""

from .run import encode

__all__ = ["encode"]
