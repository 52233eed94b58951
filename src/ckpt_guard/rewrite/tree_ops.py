"""Tree operations now live below policy (:mod:`ckpt_guard.analyze.tree_ops`): the rules'
plans edit a copy of the tree there; re-exported for the rewrite modules that use them."""

from ckpt_guard.analyze.tree_ops import (
    assign,
    copy_tree,
    holders,
    path_text,
    storages_of,
    tensor_storages,
    walk,
)

__all__ = ["assign", "copy_tree", "holders", "path_text", "storages_of", "tensor_storages",
           "walk"]
