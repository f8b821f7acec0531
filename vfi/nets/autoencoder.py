"""A frame autoencoder whose decoder attends to the input frames' features, after LDMVFI's
VQ-FIGAN (Danier et al., AAAI 2024): the latent space of ``model.space=latent``.

The encoder maps a frame [B, 3, H, W] to a latent [B, z, H/f, W/f] (f = 2^levels). The decoder
rebuilds the frame from the (quantised) latent and, at every resolution, cross-attends from
its features to the encoder's features of the two input frames I0, I1 at that resolution, in
windows (as MaxViT-style block attention), so it can copy detail the latent does not hold. Its
last layer gives four channels, a residual r (3) and a mixing logit m (1), and the frame it
returns is sigmoid(m) * I0 + (1 - sigmoid(m)) * I1 + r: a per-pixel mix of the input frames plus
a residual, so the latent carries what that mix misses. The last layer starts at zero, so an
untrained decoder returns the blend (I0 + I1) / 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.errors import VFIError
from vfi.nets.unet import ResBlock, _norm


class WindowCrossAttention(nn.Module):
    """x + proj(attention(x -> context)): every window of ``window`` x ``window`` positions of
    x [B, C, h, w] attends to the same window of each of the N context maps [B, N, C, h, w]
    (N window^2 keys), with ``heads`` heads; h, w are padded to the window internally. The
    projection starts at zero, so the block starts as the identity."""

    def __init__(self, channels: int, heads: int = 2, window: int = 8):
        super().__init__()
        if channels % heads:
            raise VFIError(f"autoencoder width {channels} must divide by heads={heads}")
        self.heads, self.window = heads, window
        self.norm_x, self.norm_c = _norm(channels), _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Conv2d(channels, 2 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _windows(self, x: Tensor) -> Tensor:
        """[B, C, H, W] (H, W multiples of the window) -> [B * nW, heads, window^2, C / heads]."""
        b, c, h, w = x.shape
        s = self.window
        x = x.view(b, self.heads, c // self.heads, h // s, s, w // s, s)
        x = x.permute(0, 3, 5, 1, 4, 6, 2)  # B, nh, nw, heads, s, s, d
        return x.reshape(b * (h // s) * (w // s), self.heads, s * s, c // self.heads)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = context.shape[1]
        s = self.window
        pad = (0, -w % s, 0, -h % s)
        xq = F.pad(self.q(self.norm_x(x)), pad)
        ctx = self.kv(self.norm_c(context.flatten(0, 1)))
        ctx = F.pad(ctx, pad)
        k, v = ctx.chunk(2, dim=1)
        hp, wp = xq.shape[-2:]
        q = self._windows(xq)
        # keys of the N frames side by side in each window: [B * nW, heads, N window^2, d]
        k, v = (
            self._windows(t).view(b, n, -1, self.heads, s * s, c // self.heads)
            .permute(0, 2, 3, 1, 4, 5).reshape(q.shape[0], self.heads, n * s * s, -1)
            for t in (k, v)
        )  # fmt: skip
        mask = None
        if any(pad):  # the padding's keys take no part
            valid = F.pad(x.new_ones(1, self.heads, h, w), pad)
            valid = self._windows(valid.expand(b, -1, -1, -1))[:, :1, :, 0] > 0  # [B nW, 1, s^2]
            mask = valid.repeat(1, 1, n)[:, :, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.view(b, hp // s, wp // s, self.heads, s, s, c // self.heads)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)[..., :h, :w]
        return x + self.proj(out)


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation (VQ-VAE) with the straight-through gradient:
    zq = z + sg(e - z); loss = |sg(z) - e|^2 + beta |z - sg(e)|^2 (mean over elements). The
    codebook starts as latents drawn from the first training batch (data-dependent init)."""

    def __init__(self, codebook_size: int, channels: int, beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.codebook = nn.Embedding(codebook_size, channels)
        nn.init.uniform_(self.codebook.weight, -1 / codebook_size, 1 / codebook_size)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.ready: bool | None = False  # host copy of ``initialized`` (None: read it once)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.ready = None  # a loaded ``initialized`` is read at the next training step

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, C, h, w] -> (zq [B, C, h, w], loss [])."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if self.training and self.ready is None:
            self.ready = bool(self.initialized)  # once after a load, not every step
        if self.training and not self.ready:
            pick = torch.randint(len(flat), (self.codebook.num_embeddings,), device=z.device)
            self.codebook.weight.data.copy_(flat[pick].detach())
            self.initialized.fill_(True)
            self.ready = True
        index = torch.cdist(flat, self.codebook.weight).argmin(1)
        e = self.codebook(index).view(z.shape[0], *z.shape[2:], z.shape[1]).permute(0, 3, 1, 2)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        return z + (e - z).detach(), loss


class FrameAutoencoder(nn.Module):
    """Encoder, regulariser and frame-attending decoder.

    Args:
        levels: downsampling steps (f = 2^levels).
        width: channels at full resolution (doubled at each level, up to 4x).
        latent_channels: z, the latent's channels.
        regularizer: "vq" (codebook of ``codebook_size``, commitment ``beta``) or "kl"
            (a diagonal Gaussian latent; the loss is its KL to N(0, I)).
        heads, window: the decoder's cross-attention.
    """

    def __init__(
        self,
        levels: int = 2,
        width: int = 16,
        latent_channels: int = 3,
        regularizer: str = "vq",
        codebook_size: int = 256,
        beta: float = 0.25,
        heads: int = 2,
        window: int = 8,
    ):
        super().__init__()
        if regularizer not in ("vq", "kl"):
            raise VFIError(
                f"model.autoencoder.regularizer must be 'vq' or 'kl', got {regularizer!r}"
            )
        if levels < 1:
            raise VFIError(f"model.autoencoder.levels must be at least 1, got {levels}")
        self.regularizer = regularizer
        self.latent_channels = latent_channels
        self.factor = self.multiple = 2**levels
        widths = [width * min(2**i, 4) for i in range(levels + 1)]
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1)
        self.down = nn.ModuleList(ResBlock(widths[i], widths[i]) for i in range(levels + 1))
        self.downsample = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1) for i in range(levels)
        )
        moments = latent_channels * (2 if regularizer == "kl" else 1)
        self.to_latent = nn.Sequential(
            _norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], moments, 1)
        )
        if regularizer == "kl":  # start nearly deterministic: std e^-3, so the latent is read
            nn.init.constant_(self.to_latent[-1].bias[latent_channels:], -6.0)
        self.quantizer = (
            VectorQuantizer(codebook_size, latent_channels, beta) if regularizer == "vq" else None
        )
        self.from_latent = nn.Conv2d(latent_channels, widths[-1], 3, 1, 1)
        self.up = nn.ModuleList(ResBlock(widths[i], widths[i]) for i in range(levels + 1))
        self.attend = nn.ModuleList(
            WindowCrossAttention(widths[i], heads, window) for i in range(levels + 1)
        )
        self.upsample = nn.ModuleList(
            nn.Conv2d(widths[i + 1], widths[i], 3, 1, 1) for i in range(levels)
        )
        self.out = nn.Sequential(_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 4, 3, 1, 1))
        nn.init.zeros_(self.out[-1].weight)  # an untrained decoder returns the blend
        nn.init.zeros_(self.out[-1].bias)

    def features(self, x: Tensor) -> list[Tensor]:
        """The encoder's features of x [B, 3, H, W] at every level, full resolution first."""
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"autoencoder input {tuple(x.shape)} must divide by {self.factor}")
        h, found = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h)
            found.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        return found

    def encode(self, x: Tensor) -> Tensor:
        """The latent [B, z, H/f, W/f] of a frame (the mean for "kl", before quantisation for
        "vq"); H, W divisible by f."""
        return self.to_latent(self.features(x)[-1])[:, : self.latent_channels]

    def regularize(self, moments: Tensor) -> tuple[Tensor, Tensor]:
        """The latent the decoder reads and the regulariser's loss, from the encoder output."""
        if self.quantizer is not None:
            return self.quantizer(moments)
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        return z, kl

    def context(self, i0: Tensor, i1: Tensor) -> list[Tensor]:
        """The two input frames' features per level, [B, 2, C_l, H_l, W_l] each."""
        both = self.features(torch.cat([i0, i1]))
        return [torch.stack(level.chunk(2), dim=1) for level in both]

    def decode(self, z: Tensor, i0: Tensor, i1: Tensor, quantize: bool = True) -> Tensor:
        """The frame sigmoid(m) * I0 + (1 - sigmoid(m)) * I1 + r [B, 3, H, W], where the
        decoder D(z; I0, I1) gives the residual r [B, 3, H, W] and the mixing logit m
        [B, 1, H, W], from the latent z [B, z, H/f, W/f] and the input frames i0, i1
        [B, 3, H, W]; a "vq" latent is quantised first (``quantize``)."""
        if quantize and self.quantizer is not None:
            z = self.quantizer(z)[0]
        context = self.context(i0, i1)
        h = self.from_latent(z)
        for i in reversed(range(len(self.up))):
            h = self.attend[i](self.up[i](h), context[i])
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        residual, logit = self.out(h).split([3, 1], dim=1)
        mix = torch.sigmoid(logit)
        return mix * i0 + (1 - mix) * i1 + residual

    def forward(self, x: Tensor, i0: Tensor, i1: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction [B, 3, H, W], regulariser loss []): x [B, 3, H, W] encoded,
        regularised (quantised with the straight-through gradient for "vq", sampled for "kl"),
        and decoded as in :meth:`decode` (the mix of i0, i1 plus the residual); the loss is the
        codebook + commitment loss ("vq") or the KL to N(0, I) ("kl")."""
        moments = self.to_latent(self.features(x)[-1])
        z, loss = self.regularize(moments)
        return self.decode(z, i0, i1, quantize=False), loss
