"""The latent mode: the frame autoencoder's parts against explicit computations, its training
run, and ResShift's chain on its latents."""

import math

import pytest
import torch
from test_models import RESSHIFT_ETA_1, RESSHIFT_KAPPA, last_step_reads_x1

from vfi.nets.autoencoder import FrameAutoencoder, VectorQuantizer, WindowCrossAttention


def dense_window_attention(block: WindowCrossAttention, x, context):
    """The block's output position by position: the query at (y, x) attends to every position
    of its window (of the unpadded map) in each context frame, one head at a time."""
    b, c, h, w = x.shape
    s, heads, d = block.window, block.heads, c // block.heads
    q = block.q(block.norm_x(x))
    kv = block.kv(block.norm_c(context.flatten(0, 1))).view(b, context.shape[1], 2 * c, h, w)
    k, v = kv[:, :, :c], kv[:, :, c:]
    out = torch.zeros_like(x)
    for i in range(b):
        for yy in range(h):
            for xx in range(w):
                ys = range(yy // s * s, min(yy // s * s + s, h))
                xs = range(xx // s * s, min(xx // s * s + s, w))
                keys = [(n, y2, x2) for n in range(context.shape[1]) for y2 in ys for x2 in xs]
                for head in range(heads):
                    part = slice(head * d, head * d + d)
                    qv = q[i, part, yy, xx]
                    kk = torch.stack([k[i, n, part, y2, x2] for n, y2, x2 in keys])
                    vv = torch.stack([v[i, n, part, y2, x2] for n, y2, x2 in keys])
                    weights = torch.softmax(kk @ qv / math.sqrt(d), 0)
                    out[i, part, yy, xx] = weights @ vv
    return x + block.proj(out)


@pytest.mark.parametrize("size", [(8, 8), (10, 7)])
def test_window_cross_attention_is_the_dense_computation(size):
    """Windows of 4 x 4 over two context frames, two heads; (10, 7) is padded to (12, 8) and
    the padding's keys take no part."""
    torch.manual_seed(0)
    block = WindowCrossAttention(8, heads=2, window=4)
    torch.nn.init.normal_(block.proj.weight, std=0.5)  # starts at zero: make it visible
    x, context = torch.randn(2, 8, *size), torch.randn(2, 2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x, context), dense_window_attention(block, x, context))


def test_vector_quantizer_picks_the_nearest_code_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3, beta=0.25).eval()
    z = torch.randn(2, 3, 4, 5).requires_grad_()
    zq, loss = vq(z)
    codes = vq.codebook.weight
    for i, y, x in [(0, 0, 0), (1, 3, 4), (0, 2, 1)]:
        distances = [float(((z[i, :, y, x] - code) ** 2).sum().detach()) for code in codes]
        nearest = codes[min(range(16), key=distances.__getitem__)]
        torch.testing.assert_close(zq[i, :, y, x], nearest)
    # loss = |sg(z) - e|^2 + beta |z - sg(e)|^2: both terms are the mean squared distance
    torch.testing.assert_close(loss, 1.25 * ((zq - z) ** 2).mean())
    (zq * torch.arange(zq.numel()).view_as(zq)).sum().backward()
    torch.testing.assert_close(z.grad, torch.arange(z.numel()).view_as(z).float())


def test_codebook_starts_from_the_first_training_latents():
    vq = VectorQuantizer(8, 3).train()
    z = torch.randn(1, 3, 4, 4)
    zq, loss = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert all(bool((flat == code).all(1).any()) for code in vq.codebook.weight)
    assert bool(vq.initialized) and float(loss.detach()) <= 1.25 * float(
        ((flat[:, None] - flat) ** 2).sum(2).max()
    )


def test_kl_regularizer_is_the_gaussian_kl():
    torch.manual_seed(0)
    ae = FrameAutoencoder(regularizer="kl", width=8)
    moments = torch.randn(2, 6, 4, 4)
    _, kl = ae.regularize(moments)
    mean, logvar = moments.chunk(2, dim=1)
    prior = torch.distributions.Normal(0.0, 1.0)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), prior
    ).mean()
    torch.testing.assert_close(kl, expected)


def test_autoencoder_shapes_and_the_decoder_reads_the_input_frames():
    """Latent [B, 3, H/4, W/4]; the decoded frame changes with I0 (through the attention and
    the features it reads)."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(width=8, levels=2).eval()
    for block in ae.attend:
        torch.nn.init.normal_(block.proj.weight, std=0.2)
    torch.nn.init.normal_(ae.out[-1].weight, std=0.2)
    x, i0, i1 = torch.rand(3, 1, 3, 32, 24) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (1, 3, 8, 6)
    a, b = ae.decode(z, i0, i1), ae.decode(z, -i0, i1)
    assert a.shape == x.shape and float((a - b).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="divide by 4"):
        ae.encode(x[..., :30, :])


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from vfi.utils.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=["paths.output_dir=/tmp/unused", "paths.lpips_backbone=null", *overrides],
        )


@pytest.fixture(scope="module")
def autoencoder_ckpt(tmp_path_factory):
    """An untrained model=autoencoder checkpoint in the format vfi.train writes (narrowed)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = _compose("model=autoencoder", "model.autoencoder.width=8")
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    ae = module.autoencoder  # outputs that start at zero, and the codebook: made visible
    for weight in [*(block.proj.weight for block in ae.attend), ae.out[-1].weight]:
        torch.nn.init.normal_(weight, std=0.1)
    torch.nn.init.normal_(ae.quantizer.codebook.weight, std=0.3)
    path = tmp_path_factory.mktemp("autoencoder") / "ae.ckpt"
    config = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "choices": {"model": "autoencoder"},
    }
    torch.save({"state_dict": module.state_dict(), "vfi_config": config}, path)
    return path


def _latent_resshift(ckpt, *overrides):
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(
        _compose(
            "model=resshift", "model.space=latent", f"model.autoencoder={ckpt}", *overrides
        ).model
    )
    torch.nn.init.normal_(model.denoiser.out[-1].weight, std=0.05)
    return model.eval()


def test_latent_chain_is_the_pixel_chain_at_a_quarter_size(autoencoder_ckpt, monkeypatch):
    """model.space=latent: the same schedule; the chain starts from E(y) [K B, 3, H/4, W/4], the
    denoiser reads the 14-channel stack at 1/4 size, the result is decoded to the frame size;
    the frozen autoencoder is the checkpoint's."""
    from hydra.utils import instantiate

    from vfi.diffusion import resshift as rs
    from vfi.models.autoencoder import load_autoencoder

    pixel = instantiate(_compose("model=resshift").model)
    latent = _latent_resshift(autoencoder_ckpt)
    torch.testing.assert_close(latent.etas, pixel.etas)
    assert latent.kappa == pixel.kappa and latent.multiple == 16
    reference = load_autoencoder(autoencoder_ckpt).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in latent.autoencoder.state_dict().items())
    assert not any(p.requires_grad for p in latent.autoencoder.parameters())
    starts, inputs = [], []
    loop = rs.sample_loop
    monkeypatch.setattr(
        rs, "sample_loop", lambda f, y, *a: starts.append(y.shape) or loop(f, y, *a)
    )
    latent.denoiser.register_forward_hook(lambda m, args, out: inputs.append(args[0].shape))
    # the K = 3 samples differ by the chain's noise: with a denoiser that returns x_1 (see
    # test_models.last_step_reads_x1) the latents decoded are draws of N(E(y), kappa^2 eta_1)
    monkeypatch.setattr(latent.denoiser, "forward", last_step_reads_x1)
    decoded, decode = [], latent.autoencoder.decode

    def recording_decode(z, *args):
        decoded.append((z, decode(z, *args)))
        return decoded[-1][1]

    monkeypatch.setattr(latent.autoencoder, "decode", recording_decode)
    i0, i1 = torch.rand(2, 2, 3, 37, 53) * 2 - 1
    mean, std = latent.interpolate(i0, i1, 0.5, 3, torch.Generator().manual_seed(0))
    assert starts == [(6, 3, 12, 16)] and set(inputs) == {(6, 14, 12, 16)}  # 48 x 64 padded
    ((z, frames),) = decoded
    assert z.shape == (6, 3, 12, 16) and frames.shape == (6, 3, 48, 64)
    spread = z.view(3, 2, 3, 12, 16).double().var(0, unbiased=False).mean()
    want = 2 / 3 * RESSHIFT_KAPPA**2 * RESSHIFT_ETA_1  # a population variance of 3 draws
    assert abs(float(spread) / want - 1) < 0.15, (float(spread), want)
    # the reported mean and std are those of the 3 decoded samples, cropped back to 37 x 53
    samples = frames[..., :37, :53].clamp(-1, 1).view(3, 2, 3, 37, 53)
    torch.testing.assert_close(mean, samples.mean(0))
    torch.testing.assert_close(std, samples.std(0, unbiased=False))
    assert float(std.mean()) > 1e-3  # the decoder carries the latents' spread into the frames


def test_latent_training_step_runs_in_the_latent_space(autoencoder_ckpt):
    """The loss compares latents: with the denoiser's output at zero it is
    Charbonnier(E(y), E(I_tau)) (1 + aux_weight), whatever the noise."""
    from torch.utils.data import default_collate

    from vfi.data.flying import FlyingDataset
    from vfi.models.base import charbonnier
    from vfi.ops import pad_to_multiple

    model = _latent_resshift(autoencoder_ckpt)
    torch.nn.init.zeros_(model.denoiser.out[-1].weight)
    model.log = lambda *a, **k: None
    ds = FlyingDataset(size=(32, 32), seed=1)
    batch = default_collate([ds[i] for i in range(2)])
    loss = model.training_step(batch, 0)
    i0, i1, it = batch["I0"], batch["I1"], batch["gt"][:, 0]
    with torch.no_grad():
        y = model.prior(i0, i1, batch["taus"][:, 0].float())["y"]
        gap = charbonnier(model.autoencoder.encode(y), model.autoencoder.encode(it))
    torch.testing.assert_close(loss.detach(), gap * (1 + model.aux_weight))
    loss.backward()
    assert model.flow_net.levels[0].head.weight.grad is not None  # through E(y)
    _ = pad_to_multiple


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model.space=latent"], "model.space=latent needs model.autoencoder="),
        (
            ["model.space=latent", "model.autoencoder=/no/such.ckpt"],
            "checkpoint not found: /no/such.ckpt",
        ),
        (
            ["model.space=latent", "model.autoencoder=RELEASE"],
            "is a model=warp_posterior checkpoint; expected one trained with model=autoencoder",
        ),
        (
            ["model.space=latent", "model.autoencoder=AE", "model.lpips_weight=0.1"],
            "LPIPS has no meaning",
        ),
        (
            ["model.space=latent", "model.autoencoder=AE3"],
            "has 4 latent channels; the denoiser reads and writes 3",
        ),
        (["model.space=voxels"], "model.space must be 'pixel' or 'latent', got 'voxels'"),
    ],
)
def test_latent_mode_bad_input_is_one_line(
    task_env, tmp_path, capsys, autoencoder_ckpt, overrides, needle
):
    from conftest import task_error

    from vfi.utils.checkpoint import RELEASE_CHECKPOINT, load_checkpoint

    four = tmp_path / "ae4.ckpt"
    if "model.autoencoder=AE3" in overrides:
        ckpt = load_checkpoint(autoencoder_ckpt)
        ckpt["vfi_config"]["model"]["autoencoder"]["latent_channels"] = 4
        from hydra.utils import instantiate

        ckpt["state_dict"] = instantiate(ckpt["vfi_config"]["model"]).state_dict()
        torch.save(ckpt, four)
    paths = {"RELEASE": RELEASE_CHECKPOINT, "AE3": four, "AE": autoencoder_ckpt}
    overrides = [
        o.split("=")[0] + "=" + str(paths.get(o.split("=")[1], o.split("=")[1])) for o in overrides
    ]
    args = [
        "model=resshift",
        *overrides,
        "data=flying",
        "data.train.size=[32,32]",
        "trainer.fast_dev_run=true",
        "logger=none",
    ]
    assert needle in task_error("vfi.train", args, tmp_path / "run", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("option", ["autoencoder", "latent"])
@pytest.mark.parametrize("data", ["flying", "vimeo90k"])
def test_latent_options_train(
    task_env, tmp_path, capsys, tested_frames, autoencoder_ckpt, option, data
):
    """fast_dev_run of model=autoencoder and of model=resshift model.space=latent on flying
    (validated and tested on 32x32 crops of the clips) and on a fabricated Vimeo-90K septuplet
    tree. The reported test/psnr is that of the test steps' frames (the autoencoder's: its
    reconstructions of the ground truth), recomputed here."""
    import fabricate
    from conftest import psnr_of, run_task

    if data == "flying":
        data_args = [
            "data=flying",
            "data.train.size=[32,32]",
            "+data.val.crop=[32,32]",
            "+data.test.crop=[32,32]",
        ]
    else:
        root = fabricate.vimeo90k(tmp_path / "vimeo", septuplet=True)
        data_args = [
            "data=vimeo90k",
            f"data.root={root}",
            "data.variant=septuplet",
            "data.train.augment.crop=[32,32]",
        ]
    if option == "autoencoder":
        model_args = ["model=autoencoder", "model.autoencoder.width=8"]
    else:
        model_args = [
            "model=resshift",
            "model.space=latent",
            f"model.autoencoder={autoencoder_ckpt}",
        ]
    args = [
        *model_args,
        *data_args,
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.fast_dev_run=true",
        "logger=none",
    ]
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert "test/psnr" in capsys.readouterr().out
    assert metrics["test/psnr"] == pytest.approx(psnr_of(tested_frames), abs=1e-3)


@pytest.mark.slow
def test_trained_autoencoder_rebuilds_the_clips_above_the_floor(task_env, tmp_path):
    """A short CPU run of model=autoencoder (30 steps on flying) rebuilds the held-out clips'
    middle frames at 30 dB PSNR or more (the README states what longer runs give), and its
    checkpoint serves the latent mode."""
    from conftest import run_task

    from vfi.models.autoencoder import load_autoencoder

    args = [
        "model=autoencoder",
        "data=flying",
        "data.num_workers=0",
        "trainer.max_steps=30",
        "trainer.val_check_interval=30",
        "trainer.limit_val_batches=2",
        "logger=none",
    ]
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert metrics["test/psnr"] >= 30.0 and metrics["test/ssim"] > 0.9
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    assert load_autoencoder(ckpt).factor == 4
