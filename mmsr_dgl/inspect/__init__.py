"""What a trained run learned, as pictures (`mmsr-dgl inspect`)."""

from .report import inspect, summary_text

__all__ = ["inspect", "summary_text"]
