"""Lightning's real Trainer vs `ckpt-guard fix` (issue 9, "Done when": frameworks' own
packages). One tiny run on CPU with synthetic data writes, through two real ModelCheckpoint
callbacks at the same step, the full training checkpoint (save_weights_only=False) and
Lightning's own weights-only checkpoint (save_weights_only=True). `ckpt-guard fix` of the
full one must equal Lightning's weights-only one key for key and value for value (tensors
bit-equal, or equal to torch's own FP16 rounding under the declared cast), and Lightning must
load both with `load_from_checkpoint` and infer identically. No documented difference
exists for Lightning (README, "What a fix does")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.frameworks.compare import POLICIES, assert_same, fix_copy

L = pytest.importorskip(
    "lightning", reason="Lightning is not installed: pip install -e '.[frameworks]'")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.plugins import MixedPrecision  # noqa: E402

# Keys Lightning's weights-only save has and ckpt-guard's fix does not, or the reverse: none.
DOCUMENTED_DIFFERENCES: frozenset[str] = frozenset()


class TinyClassifier(L.LightningModule):
    """Linear → BatchNorm → Linear: weights to cast, a norm layer and BatchNorm statistics
    that stay FP32, hyper-parameters Lightning stores and restores."""

    def __init__(self, width: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.ReLU(),
                                 nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}


RUNS = {
    "32-true": {"precision": "32-true"},
    # A real GradScaler on the CPU: its state lands under the plugin's class name
    # ("MixedPrecision"), which Lightning's weights-only save omits.
    "16-mixed+scaler": {"plugins": [MixedPrecision("16-mixed", "cpu",
                                                   scaler=torch.amp.GradScaler("cpu"))]},
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path]:
    """(full checkpoint, Lightning's weights-only checkpoint) from one two-step run."""
    root = tmp_path_factory.mktemp("lightning-" + request.param)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    # Two stateful ModelCheckpoints need distinct state keys (monitor differs); both save at
    # step 2, in the same hook, from the same trainer state.
    full = ModelCheckpoint(dirpath=root / "full", filename="full", monitor="train_loss",
                           every_n_train_steps=2, save_weights_only=False)
    weights = ModelCheckpoint(dirpath=root / "weights", filename="weights",
                              every_n_train_steps=2, save_weights_only=True)
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=True, callbacks=[full, weights],
                        **RUNS[request.param])
    trainer.fit(TinyClassifier(), data)
    assert [p.name for p in (root / "full").iterdir()] == ["full.ckpt"]
    assert [p.name for p in (root / "weights").iterdir()] == ["weights.ckpt"]
    return root / "full" / "full.ckpt", root / "weights" / "weights.ckpt"


def _load(path: Path) -> dict:
    # Lightning's own loader (lightning.fabric.utilities.cloud_io._load), as load_from_checkpoint uses it.
    from lightning.fabric.utilities.cloud_io import _load as pl_load

    return pl_load(path, map_location="cpu")


def _infer(path: Path, rounded: dict[str, torch.dtype] | None = None) -> torch.Tensor:
    """Lightning loads ``path`` and runs the model in eval mode on a fixed batch;
    ``rounded``: parameters first rounded through a dtype (the reference for a cast file)."""
    model = TinyClassifier.load_from_checkpoint(path, map_location="cpu")
    model.eval()
    if rounded:
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if name in rounded:
                    t.copy_(t.to(rounded[name]))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


def test_full_checkpoint_carries_the_training_state(trained: tuple[Path, Path]) -> None:
    full, weights = trained
    extra = set(_load(full)) - set(_load(weights))
    assert {"callbacks", "optimizer_states", "lr_schedulers"} <= extra
    assert extra <= {"callbacks", "optimizer_states", "lr_schedulers", "MixedPrecision"}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_fix_equals_lightnings_weights_only_checkpoint(
        trained: tuple[Path, Path], policy: str, tmp_path: Path) -> None:
    full, weights = trained
    fixed = fix_copy(full, POLICIES[policy], tmp_path)
    ours, theirs = _load(fixed), _load(weights)
    assert set(ours) ^ set(theirs) == DOCUMENTED_DIFFERENCES
    how: dict[str, str] = {}
    assert_same(ours, theirs, cast=how if policy == "strip+cast" else None)
    sd = theirs["state_dict"]
    cast = {k for k, v in how.items() if v == "cast"}
    if policy == "strip+cast":
        # Linear weights and biases are cast; the BatchNorm layer and its statistics stay.
        assert cast == {f"state_dict.{k}" for k in sd
                        if k.startswith(("net.0.", "net.3."))}, sorted(how.items())
    # torch's safe loader takes ours wherever it takes Lightning's.
    for p in (fixed, weights):
        torch.load(p, weights_only=True)
    # Lightning loads both and infers identically (the cast one as Lightning's weights
    # rounded to FP16 the same way).
    rounded = {k.removeprefix("state_dict."): torch.float16 for k in cast}
    assert torch.equal(_infer(fixed), _infer(weights, rounded))
