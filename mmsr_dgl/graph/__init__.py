"""MSGraph: each user history as a DGL heterograph of items and modality codes (needs DGL, NumPy, PyTorch only)."""
from .batch import MSGraphBatch, batch_to, make_batch
from .msgraph import HETEROGENEOUS, HOMOGENEOUS, MSGraphSchema, build_msgraph, collate_msgraphs, last_item_nodes

__all__ = ["MSGraphBatch", "batch_to", "make_batch", "HETEROGENEOUS", "HOMOGENEOUS", "MSGraphSchema",
           "build_msgraph", "collate_msgraphs", "last_item_nodes"]
