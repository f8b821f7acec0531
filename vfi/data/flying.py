"""Synthetic "flying" frames in the FlyingChairs manner, rendered exactly at any time.

Textured layers cut from real photos (scikit-image and scikit-learn ship them) move with a
constant-velocity affine motion (translation, rotation, zoom) over a moving textured background
and occlude each other. Every frame is rendered analytically from the layer parameters, so the
ground-truth frame at any tau in (0, 1) is exact. Item ``i`` depends only on (seed, i).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vfi.data.items import make_item, to_model_range
from vfi.errors import VFIError

SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
)


@lru_cache(maxsize=1)
def load_photos(max_side: int = 384) -> tuple[Tensor, ...]:
    """The real photos used as textures, float [3, H, W] in [-1, 1], at most ``max_side`` px."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    images += list(load_sample_images().images)
    photos = []
    for im in images:
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        t = torch.from_numpy(im[..., :3].copy()).permute(2, 0, 1).float()[None]
        s = max_side / max(t.shape[-2:])
        if s < 1:
            t = F.interpolate(t, scale_factor=s, mode="bilinear", antialias=True)
        photos.append(to_model_range(t[0]))
    return tuple(photos)


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


class _Layer:
    """A textured layer with constant-velocity affine motion about its centre c:
    layer point q is seen at p(t) = c + (1 + zoom t) R(rot t) (q - c) + vel t."""

    def __init__(
        self, g: torch.Generator, photos, size, max_shift, max_rot, max_zoom, foreground: bool
    ):
        h, w = size
        self.photo = photos[int(torch.randint(len(photos), (), generator=g))]
        self.c = torch.tensor([_rand(g, 0, w), _rand(g, 0, h)])
        angle = _rand(g, 0, 2 * math.pi)
        self.vel = _rand(g, 0, max_shift) * torch.tensor([math.cos(angle), math.sin(angle)])
        self.rot = math.radians(_rand(g, -max_rot, max_rot))
        self.zoom = _rand(g, -max_zoom, max_zoom)
        ph, pw = self.photo.shape[-2:]
        self.tex_scale = _rand(g, 0.5, 1.0) * min(ph, pw) / (1.6 * max(h, w))
        self.tex_offset = torch.tensor([_rand(g, 0.3, 0.7) * pw, _rand(g, 0.3, 0.7) * ph])
        self.foreground = foreground
        if foreground:
            r = min(h, w)
            self.radii = torch.tensor([_rand(g, 0.12, 0.35) * r, _rand(g, 0.12, 0.35) * r])
            self.shape_angle = _rand(g, 0, math.pi)
            self.sides = int(torch.randint(0, 2, (), generator=g))  # 0: ellipse, 1: rectangle

    def layer_coords(self, grid: Tensor, t: float) -> Tensor:
        """Layer point q [H, W, 2] seen at image pixel p = grid [H, W, 2] at time t."""
        a = self.rot * t
        rinv = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        return (grid - self.c - self.vel * t) @ rinv.T / (1 + self.zoom * t) + self.c

    def render(self, grid: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """Colour [3, H, W] and coverage alpha [1, H, W] at time t (alpha 1 for a background)."""
        q = self.layer_coords(grid, t)
        uv = self.tex_offset + (q - self.c) * self.tex_scale
        ph, pw = self.photo.shape[-2:]
        norm = torch.stack([2 * uv[..., 0] / (pw - 1) - 1, 2 * uv[..., 1] / (ph - 1) - 1], -1)
        colour = F.grid_sample(
            self.photo[None],
            norm[None],
            mode="bilinear",
            padding_mode="reflection",
            align_corners=True,
        )[0]
        if not self.foreground:
            return colour, torch.ones_like(colour[:1])
        ca, sa = math.cos(self.shape_angle), math.sin(self.shape_angle)
        d = q - self.c
        u = (d[..., 0] * ca + d[..., 1] * sa) / self.radii[0]
        v = (-d[..., 0] * sa + d[..., 1] * ca) / self.radii[1]
        if self.sides == 0:
            dist = (1 - torch.sqrt(u * u + v * v)) * self.radii.min()
        else:
            dist = torch.minimum((1 - u.abs()) * self.radii[0], (1 - v.abs()) * self.radii[1])
        alpha = (dist * (1 + self.zoom * t) + 0.5).clamp(0, 1)
        return colour, alpha[None]


class FlyingDataset(Dataset):
    """Synthetic interpolation items (:mod:`vfi.data.items`): one ground truth at a random tau,
    or with ``num_frames`` N > 3 the N - 2 frames at times j / (N - 1).

    Args:
        length: number of items (each is generated on the fly from (seed, index)).
        size: [H, W] of the frames.
        num_layers: [min, max] foreground layers.
        max_shift: largest foreground displacement between frame 0 and frame 1, in pixels.
        max_background_shift: the same for the background.
        static_background: probability that the background does not move at all, as behind
            most real shots from a still camera.
        max_rotation: degrees; max_zoom: relative scale change from frame 0 to frame 1.
        tau_range: tau is drawn uniformly from this range (both ends inside (0, 1)).
        num_frames: 3 for one ground truth at a random tau; N > 3 for the inner N - 2 of N
            frames evenly spaced over [0, 1].
        outer: also render the outer neighbours at t = -1 and t = 2 (``outer`` of the item).
        seed: base seed.
    """

    def __init__(
        self,
        length: int = 10000,
        size: tuple[int, int] = (64, 64),
        num_layers: tuple[int, int] = (1, 3),
        max_shift: float = 12.0,
        max_background_shift: float = 6.0,
        max_rotation: float = 10.0,
        max_zoom: float = 0.1,
        static_background: float = 0.0,
        tau_range: tuple[float, float] = (0.5, 0.5),
        num_frames: int = 3,
        outer: bool = False,
        seed: int = 0,
    ):
        lo, hi = tau_range
        if not (0.0 < lo <= hi < 1.0):
            raise VFIError(
                f"tau_range must lie inside (0, 1) with min <= max, got {list(tau_range)}"
            )
        self.length = length
        self.size = tuple(size)
        self.num_layers = tuple(num_layers)
        self.max_shift = max_shift
        self.max_background_shift = max_background_shift
        self.max_rotation = max_rotation
        self.max_zoom = max_zoom
        self.static_background = static_background
        self.tau_range = (lo, hi)
        self.num_frames = num_frames
        self.outer = outer
        self.seed = seed
        h, w = self.size
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32),
            torch.arange(w, dtype=torch.float32),
            indexing="ij",
        )
        self.grid = torch.stack([xs, ys], dim=-1)

    def __len__(self) -> int:
        return self.length

    def render(self, layers: list[_Layer], t: float) -> Tensor:
        image = None
        for layer in layers:
            colour, alpha = layer.render(self.grid, t)
            image = colour if image is None else alpha * colour + (1 - alpha) * image
        return image.clamp(-1, 1)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        photos = load_photos()
        layers = [_Layer(g, photos, self.size, self.max_background_shift, 2.0, 0.02, False)]
        n = int(torch.randint(self.num_layers[0], self.num_layers[1] + 1, (), generator=g))
        layers += [
            _Layer(g, photos, self.size, self.max_shift, self.max_rotation, self.max_zoom, True)
            for _ in range(n)
        ]
        tau = _rand(g, *self.tau_range)
        if torch.rand((), generator=g).item() < self.static_background:
            layers[0].vel.zero_()
            layers[0].rot = layers[0].zoom = 0.0
        if self.num_frames > 3:
            times = torch.linspace(0, 1, self.num_frames)
        else:
            times = torch.tensor([0.0, tau, 1.0])
        rendered = [-1.0, *times.tolist(), 2.0] if self.outer else times.tolist()
        frames = torch.stack([self.render(layers, float(t)) for t in rendered])
        return make_item(frames, times[1:-1], f"flying/{self.seed}/{index}", self.outer)
