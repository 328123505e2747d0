"""What a trained run learned, as pictures (`mmsr-dgl inspect`)."""
from .report import inspect

__all__ = ["inspect"]
