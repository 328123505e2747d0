"""MSGraph: each user history as a DGL heterograph of items and modality codes (needs DGL, NumPy, PyTorch only)."""

from .msgraph import (
    HETEROGENEOUS,
    HOMOGENEOUS,
    CanonicalEType,
    MSGraphSchema,
    build_msgraph,
    collate_msgraphs,
    last_item_nodes,
)
from .views import GROUPS, ViewKey, group_relations, group_view, group_views

__all__ = [
    "CanonicalEType",
    "GROUPS",
    "HETEROGENEOUS",
    "HOMOGENEOUS",
    "MSGraphSchema",
    "ViewKey",
    "build_msgraph",
    "collate_msgraphs",
    "group_relations",
    "group_view",
    "group_views",
    "last_item_nodes",
]
