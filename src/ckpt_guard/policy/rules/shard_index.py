"""``shard-index``: a sharded set whose index disagrees with its shards.

Loaders (transformers' ``get_checkpoint_shard_files``) trust the index: an entry missing from
its shard, a shard tensor the index does not name, a tensor in two shards, a missing or extra
shard file, a ``total_size`` that disagrees with the shards (huggingface_hub's count: tensor
data bytes, shared storage once) or a shard that is a Git LFS pointer each load a wrong or
partial model. The problems are found while reading the set
(:func:`ckpt_guard.read.sharded.read_sharded`); this rule turns each into one finding.
"""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Finding, Rule
from ckpt_guard.vocab import Action

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig


def findings(a: Analysis, cfg: RuleConfig) -> list[Finding]:
    """One finding per problem of the set, naming it (``detail.kind`` says which)."""
    return [RULE.finding(cfg, p["message"], 0, {k: v for k, v in p.items() if k != "message"})
            for p in a.checkpoint.metadata.get("shard_problems", ())]


RULE = Rule(
    id="shard-index",
    default_action=Action.FAIL,
    summary="Sharded set whose index disagrees with its shards",
    help="The index (model.safetensors.index.json, pytorch_model.bin.index.json) and the shard "
         "files disagree: a mapped tensor missing from its shard, a tensor the index does not "
         "name or in two shards, a missing or extra shard, a wrong total_size, or a shard that "
         "is a Git LFS pointer. Loaders trust the index: regenerate it from the shards (e.g. "
         "huggingface_hub.save_torch_state_dict) or restore the missing files.",
    template="""\
  # Sharded sets (model.safetensors.index.json, pytorch_model.bin.index.json and their
  # shards): an index entry missing from its shard, a shard tensor the index does not name, a
  # tensor in two shards, a missing or extra shard file, a total_size that disagrees with the
  # shards, a shard that is a Git LFS pointer. Any of these loads a wrong or partial model.
  shard-index: fail
""",
)
