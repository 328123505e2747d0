"""MSGraph: each user history as a DGL heterograph of items and modality codes (needs DGL, NumPy, PyTorch only)."""
from .batch import MSGraphBatch, batch_to, make_batch
from .groups import Feats, RelationGroup, relation_group
from .msgraph import (HETEROGENEOUS, HOMOGENEOUS, CanonicalEType, MSGraphSchema, build_msgraph, collate_msgraphs,
                      last_item_nodes)

__all__ = ["CanonicalEType", "Feats", "MSGraphBatch", "RelationGroup", "batch_to", "make_batch", "relation_group",
           "HETEROGENEOUS", "HOMOGENEOUS", "MSGraphSchema", "build_msgraph", "collate_msgraphs", "last_item_nodes"]
