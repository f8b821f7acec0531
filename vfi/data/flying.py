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


@lru_cache(maxsize=4)
def photo_stack(device: str = "cpu") -> tuple[Tensor, Tensor]:
    """The photos of :func:`load_photos` padded (bottom/right, zeros) into one tensor
    [P, 3, H_max, W_max] on ``device``, and their sizes [P, 2] as (width, height)."""
    photos = load_photos()
    h = max(p.shape[-2] for p in photos)
    w = max(p.shape[-1] for p in photos)
    stack = torch.stack([F.pad(p, (0, w - p.shape[-1], 0, h - p.shape[-2])) for p in photos])
    sizes = torch.tensor([[p.shape[-1], p.shape[-2]] for p in photos], dtype=torch.float32)
    return stack.to(device), sizes.to(device)


def reflect(x: Tensor, size: Tensor) -> Tensor:
    """Pixel coordinates x reflected into [0, size - 1], as ``grid_sample``'s
    ``padding_mode="reflection"`` with ``align_corners=True`` does (period 2 (size - 1))."""
    span = size - 1
    x = torch.remainder(x.abs(), 2 * span)
    return torch.where(x > span, 2 * span - x, x)


SCENE_KEYS = (
    "photo", "c", "vel", "rot", "zoom", "tex_scale", "tex_offset", "radii", "shape_angle",
    "rectangle", "foreground", "active",
)  # fmt: skip


def render_scenes(scenes: dict[str, Tensor], size: tuple[int, int], times: Tensor) -> Tensor:
    """The frames [B, N, 3, H, W] in [-1, 1] of B scenes at times [B, N], all layers and
    times at once, on the scenes' device: the DataLoader draws each item with it (B = 1) and
    ``render="device"`` the whole batch after its transfer.

    ``scenes`` holds per item and layer ([B, L], the first layer the background; layers with
    ``active`` false are padding): ``photo`` (index into :func:`photo_stack`), the centre ``c``
    and velocity ``vel`` [B, L, 2], ``rot`` (radians per unit time), ``zoom``, ``tex_scale``,
    ``tex_offset`` [B, L, 2], and for foreground layers (``foreground``) the shape: ``radii``
    [B, L, 2], ``shape_angle`` and ``rectangle`` (else an ellipse). Layer point q is seen at
    pixel p(t) = c + (1 + zoom t) R(rot t) (q - c) + vel t; its colour is the photo at
    tex_offset + (q - c) tex_scale (bilinear, reflected at the photo's edges); a foreground
    layer covers alpha = clamp(d (1 + zoom t) + 1/2, 0, 1) of a pixel at signed distance d
    inside its shape, and layers are composited in order over the background."""
    h, w = size
    device = scenes["c"].device
    photos, sizes = photo_stack(str(device))
    b, n_layers = scenes["photo"].shape
    n = times.shape[1]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )

    def per_layer(name: str) -> Tensor:  # [B, L] -> [B, L, N, 1, 1]
        return scenes[name].float()[:, :, None, None, None]

    t = times.float()[:, None, :, None, None]  # [B, 1, N, 1, 1]
    c = scenes["c"].float()[:, :, None, None, None, :]  # [B, L, 1, 1, 1, 2]
    vel = scenes["vel"].float()[:, :, None, None, None, :]
    angle = per_layer("rot") * t
    cos, sin = angle.cos(), angle.sin()
    dx = xs - c[..., 0] - vel[..., 0] * t
    dy = ys - c[..., 1] - vel[..., 1] * t
    scale = 1 + per_layer("zoom") * t
    rx, ry = (dx * cos + dy * sin) / scale, (-dx * sin + dy * cos) / scale  # q - c
    offset = scenes["tex_offset"].float()[:, :, None, None, None, :]
    photo_size = sizes[scenes["photo"]][:, :, None, None, None, :]  # [B, L, 1, 1, 1, 2]
    u = reflect(offset[..., 0] + rx * per_layer("tex_scale"), photo_size[..., 0])
    v = reflect(offset[..., 1] + ry * per_layer("tex_scale"), photo_size[..., 1])
    big_h, big_w = photos.shape[-2:]
    norm = torch.stack([2 * u / (big_w - 1) - 1, 2 * v / (big_h - 1) - 1], dim=-1)
    colour = F.grid_sample(
        photos[scenes["photo"].flatten()],
        norm.reshape(b * n_layers, n * h, w, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    ).view(b, n_layers, 3, n, h, w)
    radii = scenes["radii"].float()[:, :, None, None, None, :]
    ca, sa = per_layer("shape_angle").cos(), per_layer("shape_angle").sin()
    pu = (rx * ca + ry * sa) / radii[..., 0]
    pv = (-rx * sa + ry * ca) / radii[..., 1]
    ellipse = (1 - torch.sqrt(pu * pu + pv * pv)) * radii.amin(-1)
    rectangle = torch.minimum((1 - pu.abs()) * radii[..., 0], (1 - pv.abs()) * radii[..., 1])
    dist = torch.where(per_layer("rectangle") > 0, rectangle, ellipse)
    alpha = (dist * scale + 0.5).clamp(0, 1)
    alpha = torch.where(per_layer("foreground") > 0, alpha, torch.ones_like(alpha))
    alpha = alpha * per_layer("active")  # [B, L, N, H, W]
    image = colour[:, 0]
    for layer in range(1, n_layers):
        a = alpha[:, layer, None]  # [B, 1, N, H, W]
        image = a * colour[:, layer] + (1 - a) * image
    return image.clamp(-1, 1).transpose(1, 2)


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


class _Layer:
    """A textured layer with constant-velocity affine motion about its centre c:
    layer point q is seen at p(t) = c + (1 + zoom t) R(rot t) (q - c) + vel t; its parameters
    go to :func:`render_scenes` through :func:`scene_tensors`."""

    def __init__(
        self, g: torch.Generator, photos, size, max_shift, max_rot, max_zoom, foreground: bool
    ):
        h, w = size
        self.photo_index = int(torch.randint(len(photos), (), generator=g))
        self.photo = photos[self.photo_index]
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


def scene_tensors(layers: list[_Layer], num_layers: int) -> dict[str, Tensor]:
    """One scene's layers as :func:`render_scenes`' parameters [L, ...], padded with inactive
    layers to ``num_layers``."""
    pad = num_layers - len(layers)
    out = {
        "photo": torch.tensor([x.photo_index for x in layers] + [0] * pad),
        "c": torch.stack([x.c for x in layers] + [torch.zeros(2)] * pad),
        "vel": torch.stack([x.vel for x in layers] + [torch.zeros(2)] * pad),
        "tex_offset": torch.stack([x.tex_offset for x in layers] + [torch.zeros(2)] * pad),
        "radii": torch.stack([getattr(x, "radii", torch.ones(2)) for x in layers]
                             + [torch.ones(2)] * pad),
        "foreground": torch.tensor([x.foreground for x in layers] + [True] * pad),
        "rectangle": torch.tensor([getattr(x, "sides", 0) == 1 for x in layers] + [False] * pad),
        "active": torch.tensor([True] * len(layers) + [False] * pad),
    }  # fmt: skip
    for name in ("rot", "zoom", "tex_scale", "shape_angle"):
        out[name] = torch.tensor([float(getattr(x, name, 0.0)) for x in layers] + [0.0] * pad)
    return out


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
        render: "cpu" renders the frames in the DataLoader (its workers); "device" leaves
            them to the batch's device: items carry the scene (``scene``, ``times``, the
            taus) and :func:`render_batch` draws the whole batch there at once (the
            DataModule does it after the transfer).
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
        render: str = "cpu",
    ):
        if render not in ("cpu", "device"):
            raise VFIError(f"data render must be 'cpu' or 'device', got {render!r}")
        self.render_on = render
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

    def __len__(self) -> int:
        return self.length

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
        rendered = torch.tensor([-1.0, *times.tolist(), 2.0]) if self.outer else times
        item_id = f"flying/{self.seed}/{index}"
        if self.render_on == "device":
            spec = f"{self.size[0]}x{self.size[1]}" + ("+outer" if self.outer else "")
            scene = scene_tensors(layers, self.num_layers[1] + 1)
            return {"scene": scene, "times": rendered, "taus": times[1:-1], "id": item_id,
                    "render_spec": spec}  # fmt: skip
        scene = {k: v[None] for k, v in scene_tensors(layers, len(layers)).items()}
        frames = render_scenes(scene, self.size, rendered[None])[0]
        return make_item(frames, times[1:-1], item_id, self.outer)


def render_batch(batch: dict) -> dict:
    """A batch of device-rendered flying items (:class:`FlyingDataset` with
    ``render="device"``) with its frames drawn on the batch's device: I0, I1, gt (and outer),
    as the CPU items have them."""
    if "scene" not in batch:
        return batch
    scene, times = batch.pop("scene"), batch.pop("times")
    spec = batch.pop("render_spec")[0]  # a host string: "HxW" or "HxW+outer"
    h, w = (int(x) for x in spec.split("+")[0].split("x"))
    outer = spec.endswith("+outer")
    frames = render_scenes(scene, (h, w), times)  # [B, N + 2 (+ 2), 3, H, W]
    if outer:
        batch["outer"] = torch.stack([frames[:, 0], frames[:, -1]], dim=1)
        frames = frames[:, 1:-1]
    batch.update(I0=frames[:, 0], I1=frames[:, -1], gt=frames[:, 1:-1])
    return batch
