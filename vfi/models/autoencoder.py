"""model=autoencoder: trains the frame autoencoder of the latent mode (VQ-FIGAN-style) on any
data module, scored by how well it rebuilds the ground-truth frames."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vfi.errors import VFIError
from vfi.models.base import (
    TrainableInterpolator,
    built,
    charbonnier,
    host_taus,
    pick_ground_truth,
)
from vfi.nets.autoencoder import FrameAutoencoder
from vfi.ops import pad_to_multiple


class AutoencoderModule(TrainableInterpolator):
    """Trains :class:`vfi.nets.autoencoder.FrameAutoencoder` to rebuild the frame I_tau
    between I0 and I1 from its latent and the input frames' features:

        loss = Charbonnier(D(R(E(I_tau)), I0, I1), I_tau) + reg_weight L_reg (+ LPIPS)

    with the regulariser R's loss L_reg (VQ codebook and commitment, or KL). Validation and
    test score the reconstructions of every ground-truth frame with the usual metrics
    (``val/psnr`` picks the checkpoint). It does not interpolate: its checkpoint serves
    ``model=resshift model.space=latent model.autoencoder=<ckpt>``.

    Args:
        autoencoder: the network.
        reg_weight: weight of the regulariser's loss.
        other keyword arguments (lr, optimizer, scheduler, lpips_weight, ...) go to
            :class:`vfi.models.base.TrainableInterpolator`.
    """

    def __init__(
        self,
        autoencoder: FrameAutoencoder,
        reg_weight: float = 1.0,
        val_samples: int = 1,
        test_samples: int = 1,
        **kwargs,
    ):
        super().__init__(val_samples=val_samples, test_samples=test_samples, **kwargs)
        autoencoder = built(autoencoder)
        self.autoencoder = autoencoder
        self.reg_weight = reg_weight
        self.multiple = autoencoder.multiple

    def reconstruct(self, frame: Tensor, i0: Tensor, i1: Tensor) -> Tensor:
        """D(R(E(frame)), I0, I1) [B, 3, H, W] for any H, W (padded and cropped back)."""
        stack, (h, w) = pad_to_multiple(torch.cat([frame, i0, i1]), self.multiple)
        frame, i0, i1 = stack.chunk(3)
        z = self.autoencoder.encode(frame)
        self.network_calls += 1
        return self.autoencoder.decode(z, i0, i1)[..., :h, :w]

    def interpolate(self, i0: Tensor, i1: Tensor, tau, num_samples: int = 1, **kwargs):
        raise VFIError(
            "an autoencoder checkpoint rebuilds frames but does not interpolate: use it as "
            "model=resshift model.space=latent model.autoencoder=<ckpt>"
        )

    @torch.no_grad()
    def evaluation_outputs(self, batch: dict, samples: int):
        """The reconstruction of every ground-truth frame (std 0) and the times."""
        i0, i1 = batch["I0"], batch["I1"]
        outs = []
        for j in range(batch["gt"].shape[1]):
            recon = self.reconstruct(batch["gt"][:, j], i0, i1).clamp(-1, 1)
            outs.append((recon, torch.zeros_like(recon)))
        return outs, host_taus(batch)[0]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "I0" not in batch:  # every item of the batch was skipped as corrupt
            return self.empty_batch_loss()
        i0, i1, it, _ = pick_ground_truth(batch)
        i0, i1, it = pad_to_multiple(torch.cat([i0, i1, it]), self.multiple)[0].chunk(3)
        recon, reg = self.autoencoder(it, i0, i1)
        loss_x = charbonnier(recon, it)
        loss = loss_x + self.reg_weight * reg + self.lpips_loss(recon, it)
        b = it.shape[0]
        self.log("train/loss", loss, batch_size=b, prog_bar=True)
        self.log("train/loss_x", loss_x, batch_size=b)
        self.log("train/loss_reg", reg, batch_size=b)
        return loss


def load_autoencoder(path: str | Path) -> FrameAutoencoder:
    """The trained network of a ``model=autoencoder`` checkpoint, frozen and in eval mode;
    one line for a missing file or another model's checkpoint."""
    from vfi.models.checkpoint import model_from_checkpoint
    from vfi.utils.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    target = ckpt["vfi_config"]["model"].get("_target_", "")
    if target != f"{AutoencoderModule.__module__}.{AutoencoderModule.__name__}":
        model = ckpt["vfi_config"].get("choices", {}).get("model", target)
        raise VFIError(
            f"model.autoencoder={path} is a model={model} checkpoint; expected one trained "
            "with model=autoencoder"
        )
    network = model_from_checkpoint(ckpt).autoencoder
    network.requires_grad_(False)
    return network.eval()
