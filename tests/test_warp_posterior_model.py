"""model=warp_posterior: the bridge wired to the flow, visibility and refiner networks."""

import numpy as np
import pytest
import torch
from conftest import LPIPS_BACKBONE
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import default_collate

from vfi.data.flying import FlyingDataset
from vfi.diffusion.warp_posterior import time_grid
from vfi.utils.run import CONF_DIR


def build(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "paths.output_dir=/tmp/unused",
                f"paths.lpips_backbone={LPIPS_BACKBONE or 'null'}",
                "model=warp_posterior",
                *overrides,
            ],
        )
    model = instantiate(cfg.model)
    model.log = lambda *args, **kwargs: None
    return model


@pytest.fixture(scope="module")
def model():
    """The bridge on the T = 8 grid with a zero-flow start (init=none), so that an untrained
    net has exactly zero motion."""
    torch.manual_seed(0)
    return build("model.flow_net.init=none", "model.num_steps=8")


def _pair(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 3, size, size, generator=g) * 2 - 1 for _ in range(2))


def test_untrained_noise_free_path_is_the_linear_blend(model):
    """Zero flows, v0 = v1 = 0.5 and a zero-initialised refiner: every x_k is (1-l) I0 + l I1."""
    i0, i1 = _pair()
    times = time_grid(8, [0.3])
    path = model.sample_path(i0, i1, times, stop=0, noise=False)
    assert len(path) == len(times) == 10
    for x, l in zip(path, times.tolist(), strict=True):
        torch.testing.assert_close(x, (1 - l) * i0 + l * i1, rtol=0, atol=1e-5)


def test_one_pass_serves_every_time_and_counts_network_calls(model):
    """Targets 0.25 / 0.5 / 0.75 on the T = 8 grid: the pass stops at 0.25, so the refiner runs
    for l_{k-1} = 7/8 ... 2/8, six times, whatever the number of samples. The K = 3 samples
    differ by the bridge's noise (below)."""
    i0, i1 = _pair(size=40)  # not a multiple of 16: padded and cropped back
    times = [0.25, 0.5, 0.75]
    before = model.network_calls
    g = torch.Generator().manual_seed(0)
    outs = model.interpolate_times(i0, i1, times, num_samples=3, generator=g)
    assert model.network_calls - before == 6
    assert [m.shape for m, _ in outs] == [i0.shape] * 3
    mean, std = model.interpolate(i0, i1, 0.5, num_samples=1)
    assert model.network_calls - before == 6 + 4
    # K = 1: no sample spread; the std is the prior's variance and the floor. With zero flows
    # the hypotheses are I0 and I1, weighted 1 - l and l about their mean (l (1 - l)
    # (I1 - I0)^2: 1/4 at l = 1/2), and the warped frames are I0, I1 (disagreement (I1 - I0)^2).
    expected = ((i1 - i0) ** 2 * 5 / 4 + model.uncertainty_floor**2).sqrt()
    torch.testing.assert_close(std, expected)
    singles = model.interpolate_times(i0, i1, times, num_samples=1)
    kappa = model.kappa
    for l, (_, std3), (_, std1) in zip(times, outs, singles, strict=True):
        prior = (i1 - i0) ** 2 * (1 + l * (1 - l)) + model.uncertainty_floor**2
        torch.testing.assert_close(std1, prior.sqrt())
        # K = 3: the chains' spread on top. Zero flows (S_k = identity) and a zero refiner
        # make the pass a Brownian bridge about the blend: x_k ~ N(mu_k, beta_k), and the
        # estimate at l from x_k at l_k = l + 1/8, mu + rho beta(l) / beta(l_k) (x_k - mu_k),
        # has variance kappa^2 l^2 (1 - l_k) / l_k per pixel; the population variance of 3
        # samples is 2/3 of that on average.
        l_k = l + 1 / 8
        spread = (std3.double() ** 2 - std1.double() ** 2).mean()
        want = 2 / 3 * kappa**2 * l**2 * (1 - l_k) / l_k
        assert abs(float(spread) / want - 1) < 0.1, (l, float(spread), want)


def test_samples_pass_through_the_endpoints(model):
    i0, i1 = _pair()
    path = model.sample_path(i0, i1, time_grid(4), stop=0, num_samples=2)
    assert torch.equal(path[0], i0.repeat(2, 1, 1, 1)) and torch.equal(
        path[-1], i1.repeat(2, 1, 1, 1)
    )


def test_next_grid_time(model):
    l = torch.tensor([0.125, 0.3, 0.5, 0.875], dtype=torch.float64)
    torch.testing.assert_close(
        model.next_grid_time(l), torch.tensor([0.25, 0.375, 0.625, 1.0], dtype=torch.float64)
    )


@pytest.mark.parametrize("num_frames", [3, 9])
def test_training_step_trains_flows_through_the_posterior(num_frames):
    """Sequences (ground truth on the grid) and triplets (a prior draw where there is none):
    the loss is finite and reaches the flow head, which starts at zero, through mu~."""
    torch.manual_seed(0)
    model = build()
    ds = FlyingDataset(length=4, size=(32, 32), num_frames=num_frames, tau_range=(0.2, 0.8))
    batch = default_collate([ds[i] for i in range(4)])
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    flow_grads = [p.grad for n, p in model.flow_net.named_parameters() if p.grad is not None]
    assert flow_grads and any(bool(g.abs().sum() > 0) for g in flow_grads)
    assert model.refiner.out[-1].weight.grad.abs().sum() > 0


def test_exact_mode_samples_and_reports_cg(model):
    exact = build(
        "model.posterior=exact",
        "model.cg_tol=1e-6",
        "model.flow_net.init=none",
        "model.num_steps=8",
    )
    exact.load_state_dict(model.state_dict())
    i0, i1 = _pair()
    with torch.no_grad():
        exact.flow_net.levels[-1].head.bias.fill_(0.7)  # some motion, so S_k is not identity
        exact.interpolate_times(i0, i1, [0.5])
    assert len(exact.cg_stats) == 3  # k = 7, 6, 5 (k = T = 8 is the prior: no solve)
    stats = exact.sampler_stats()
    assert stats["cg_iterations"] >= 1 and stats["cg_residual"] <= 1e-6 and not exact.cg_stats


def test_rollout_training_takes_x_k_from_the_sampler(monkeypatch):
    """rollout_prob=1 with grid-aligned sequences: x_k is the sampler's own state at l_k."""
    torch.manual_seed(1)
    model = build("model.rollout_prob=1.0", "model.num_steps=8")
    ds = FlyingDataset(length=2, size=(32, 32), num_frames=9)
    batch = default_collate([ds[i] for i in range(2)])
    seen = []
    original = model.sample_path

    def spy(i0, i1, times, stop=1, **kwargs):
        path = original(i0, i1, times, stop, **kwargs)
        seen.append((stop, path[0]))
        return path

    monkeypatch.setattr(model, "sample_path", spy)
    inputs = []
    refine = model.refine

    def record(mean, x_k, *args):
        inputs.append(x_k)
        return refine(mean, x_k, *args)

    monkeypatch.setattr(model, "refine", record)
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and len(seen) == 1
    stop, x_k = seen[0]
    assert 2 <= stop <= 8 and len(inputs) == 8 - stop + 1  # the pass, then the trained step
    assert torch.equal(inputs[-1], x_k)


def test_motion_error_moves_edges_by_a_share_of_the_motion():
    """prior_variance on a ramp mu = alpha x moving at v = (3, 4) px per unit time, with agreeing
    warps and one-sided fusion: the only variance is (e |v| alpha)^2 (away from the border,
    where the Sobel gradient of a ramp is exact); e = 0 leaves none."""
    alpha, e = 0.02, 0.5
    ramp = (torch.arange(16.0) * alpha).expand(1, 3, 16, 16)
    ones = torch.ones(1, 1, 16, 16)
    terms = {
        "mu": ramp, "w0": ramp, "w1": ramp, "a": ones, "b": ones * 0, "confidence": ones,
        "velocity": torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).expand(1, 2, 16, 16),
    }  # fmt: skip
    far = torch.zeros_like(ramp)
    var = build(f"model.motion_error={e}").prior_variance(terms, far, far, 0.5)
    inner = var[..., 1:-1, 1:-1]
    torch.testing.assert_close(inner, torch.full_like(inner, (e * 5 * alpha) ** 2))
    assert float(build().prior_variance(terms, far, far, 0.5).abs().max()) < 1e-12


def test_motion_error_sigma_moves_edges_by_a_share_of_the_motions_departure():
    """With sigma, the edge term follows v - G_sigma * v, not v: a uniform motion, however fast,
    adds nothing; a moving square on a still background adds (e |v - G v| |grad mu|)^2, here
    against scipy's Gaussian filter and the Sobel energy of mu."""
    from scipy.ndimage import gaussian_filter

    from vfi.ops.fusion import gradient_energy

    alpha, e, sigma = 0.02, 0.5, 2.0
    ramp = (torch.arange(16.0) * alpha).expand(1, 3, 16, 16)
    ones = torch.ones(1, 1, 16, 16)
    uniform = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).expand(1, 2, 16, 16)
    terms = {"mu": ramp, "w0": ramp, "w1": ramp, "a": ones, "b": ones * 0, "confidence": ones}
    far = torch.zeros_like(ramp)
    model = build(f"model.motion_error={e}", f"model.motion_error_sigma={sigma}")
    var = model.prior_variance(dict(terms, velocity=uniform), far, far, 0.5)
    assert float(var.abs().max()) < 1e-10
    square = torch.zeros(1, 2, 16, 16)
    square[:, 0, 5:11, 5:11] = 6.0
    var = model.prior_variance(dict(terms, velocity=square), far, far, 0.5)
    mean = torch.from_numpy(
        gaussian_filter(square[0, 0].double().numpy(), sigma, mode="nearest", truncate=2.0)
    ).float()
    want = e**2 * (square[0, 0] - mean) ** 2 * gradient_energy(ramp)
    torch.testing.assert_close(var, want.expand_as(var), rtol=1e-5, atol=1e-9)
    assert float(var.max()) > 1e-3


@pytest.mark.parametrize(
    "override",
    [
        "model.warp_mode=nearest",
        "model.motion_error=-1",
        "model.motion_error_sigma=0",
        "model.dis_blend=-0.1",
        "model.dis_blend_sigma=0",
        "model.dis_blend_cap=-1",
        "model.dis_blend_speed=0",
        "model.dis_blend_influence=huber",
        "model.quadratic_motion=-0.5",
        "model.residual_gain=-1",
        "model.residual_error=-1",
        "model.refiner_views=3",
        "model.refiner_views=2",  # with the default chain path
        "model.fallback=always",
        "model.num_steps=1",
        "model.reverse_path=jump",
    ],
)
def test_bad_model_options_are_rejected(override):
    """Hydra wraps the constructor's VFIError; the message names the option."""
    name = override.split("=")[0]
    with pytest.raises(Exception, match=name.replace(".", r"\.")):
        build(override)


@pytest.mark.parametrize(
    "speed, influence", [(None, "clamp"), (3.0, "clamp"), (None, "welsch"), (3.0, "welsch")]
)
def test_dis_blend_moves_every_frame_towards_the_dis_frame_in_the_low_frequencies(speed, influence):
    """With model.dis_blend = w, each time's frame is x^ + w G_sigma * psi(D - x^), psi the
    clamp at +-c or Welsch's d exp(-d^2 / 2 c^2) (model.dis_blend_influence), D the DIS frame
    (OpenCV DIS both ways, linear motion: the classical baseline's frame), x^ the frame
    without it; the std is left as it was. With model.dis_blend_speed = V the weight is
    w exp(-s^2 / 2 V^2) per pixel, s = max(|F_0->1|, |F_1->0|) of DIS's flows. Checked
    against the classical baseline and scipy's Gaussian filter, for two times from one pass."""
    from scipy.ndimage import gaussian_filter

    from vfi.models.baselines import ClassicalInterpolator
    from vfi.ops.dis import DISFlow

    # 64 px: OpenCV's DIS object gives another flow on its second call at 40 px, not at 48+
    i0, i1 = _pair(b=1, size=64, seed=4)
    i1 = torch.roll(i0, 3, dims=-1) * 0.9  # a motion DIS can follow
    times, w, sigma, cap = [0.25, 0.5], 0.4, 1.5, 8.0
    torch.manual_seed(0)
    plain = build("model.flow_net.init=none", "model.sample_noise=false").eval()
    torch.manual_seed(0)
    blended = build(
        "model.flow_net.init=none",
        "model.sample_noise=false",
        f"model.dis_blend={w}",
        f"model.dis_blend_sigma={sigma}",
        f"model.dis_blend_cap={cap}",
        f"model.dis_blend_speed={'null' if speed is None else speed}",
        f"model.dis_blend_influence={influence}",
    ).eval()
    weight = torch.tensor(w)
    if speed is not None:
        flows = DISFlow()(i0, i1), DISFlow()(i1, i0)
        s = torch.stack([(f[0] ** 2).sum(0).sqrt() for f in flows]).amax(0)
        weight = w * torch.exp(-(s**2) / (2 * speed**2))
        assert 0.05 < float(weight.mean()) < 0.9 * w  # the motion of 3 px turns it down
    before = plain.interpolate_times(i0, i1, times)
    after = blended.interpolate_times(i0, i1, times)
    for t, (x, std), (y, std_y) in zip(times, before, after, strict=True):
        dis, _ = ClassicalInterpolator().interpolate(i0, i1, torch.tensor([t]))
        d, c = (dis - x)[0].double(), 2 * cap / 255
        diff = d.clamp(-c, c) if influence == "clamp" else d * torch.exp(-0.5 * (d / c) ** 2)
        diff = diff.numpy()
        radius = int(torch.tensor(2 * sigma).ceil())
        low = [gaussian_filter(c, sigma, mode="nearest", truncate=radius / sigma) for c in diff]
        want = x + weight * torch.from_numpy(np.stack(low)).float()[None]
        torch.testing.assert_close(y, want, rtol=0, atol=1e-5)
        assert float((y - x).abs().max()) > 1e-3  # it moved the frame
        torch.testing.assert_close(std_y, std)


def test_dis_second_opinion_is_measured_beside_the_flow_net_and_waited_for(monkeypatch):
    """The DIS flows of dis_blend are measured in a thread of their own, started before the
    flow net runs (so the two overlap) and joined before the correction; an error there reaches
    the caller."""
    import threading

    from vfi.ops.dis import DISFlow

    model = build("model.flow_net.init=none", "model.sample_noise=false", "model.dis_blend=0.4")
    model.eval()
    i0, i1 = _pair(b=1, size=64, seed=4)
    seen, flow_net_started = [], threading.Event()
    measure, flow_net = DISFlow.__call__, model.flow_net.forward

    def dis(self, a, b):
        assert flow_net_started.wait(10)  # it runs while the flow net does
        seen.append(threading.get_ident())
        return measure(self, a, b)

    def net(*args, **kwargs):
        flow_net_started.set()
        return flow_net(*args, **kwargs)

    monkeypatch.setattr(DISFlow, "__call__", dis)
    monkeypatch.setattr(model.flow_net, "forward", net)
    model.interpolate_times(i0, i1, [0.5])
    assert len(seen) == 2 and threading.get_ident() not in seen

    def broken(self, a, b):
        raise RuntimeError("DIS failed")

    monkeypatch.setattr(DISFlow, "__call__", broken)
    with pytest.raises(RuntimeError, match="DIS failed"):
        model.interpolate_times(i0, i1, [0.5])


def test_dis_second_opinions_started_together_are_each_the_one_measured_alone():
    """Second opinions whose threads overlap (a caller that starts several before waiting, or
    one left running by a failed pass) each get their own pair's flows: no OpenCV object is
    shared between threads."""
    model = build("model.flow_net.init=none", "model.dis_blend=0.4").eval()
    g = torch.Generator().manual_seed(5)
    pairs = [torch.rand(2, 1, 3, 144, 176, generator=g) * 2 - 1 for _ in range(8)]
    pairs = [(i0, torch.roll(i0, k + 1, dims=-1)) for k, (i0, _) in enumerate(pairs)]
    mean = torch.zeros(1, 3, 144, 176)
    alone = [model.dis_second_opinion(i0, i1)(mean, 0.5) for i0, i1 in pairs]
    together = [model.dis_second_opinion(i0, i1) for i0, i1 in pairs]
    for want, correct in zip(alone, together, strict=True):
        assert torch.equal(correct(mean, 0.5), want)
    assert len({float(x.abs().sum()) for x in alone}) == len(pairs)  # the pairs differ


def test_bicubic_prior_warps_with_the_bicubic_kernel():
    """warp_mode=bicubic: P[I0] is the bicubic warp by F_l->0 (bilinear differs)."""
    from vfi.ops import intermediate_flows, warp_backward

    model = build("model.warp_mode=bicubic", "model.flow_net.init=none")
    g = torch.Generator().manual_seed(1)
    i0, i1 = torch.rand(2, 1, 3, 32, 32, generator=g) * 2 - 1
    f01, f10 = torch.randn(2, 1, 2, 32, 32, generator=g) * 1.5
    l = torch.tensor([0.25])
    f_l0, f_l1 = intermediate_flows(f01, f10, l)
    terms = model.bridge_terms(i0, i1, f_l0, f_l1, l)
    torch.testing.assert_close(terms["w0"], warp_backward(i0, f_l0, mode="bicubic"))
    assert (terms["w0"] - warp_backward(i0, f_l0)).abs().max() > 0.05


class _GridSampleBackward(torch.autograd.Function):
    """grid_sample's backward as its own op, whose derivative raises as it does on CUDA."""

    @staticmethod
    def forward(ctx, grad, x, grid, options):
        x, grid = x.detach().requires_grad_(), grid.detach().requires_grad_()
        with torch.enable_grad():
            out = _GridSampleCuda.grid_sample(x, grid, **options)
            return torch.autograd.grad(out, (x, grid), grad)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("derivative for aten::grid_sampler_2d_backward is not implemented")


class _GridSampleCuda(torch.autograd.Function):
    """grid_sample with CUDA's autograd support: a backward, but no double backward."""

    grid_sample = staticmethod(torch.nn.functional.grid_sample)

    @staticmethod
    def forward(ctx, x, grid, mode, padding_mode, align_corners):
        ctx.save_for_backward(x, grid)
        ctx.options = {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners}
        return _GridSampleCuda.grid_sample(x, grid, **ctx.options)

    @staticmethod
    def backward(ctx, grad):
        x, grid = ctx.saved_tensors
        gx, ggrid = _GridSampleBackward.apply(grad, x, grid, ctx.options)
        return gx, ggrid, None, None, None


def test_training_step_needs_no_double_backward_of_grid_sample(monkeypatch):
    """With CUDA's grid_sample (no double backward) a training step, forward and backward,
    runs and reaches the flow net: the posterior uses the explicit transpose S^T. The autograd
    adjoint it replaces would fail there, and is refused under grad."""
    monkeypatch.setattr(
        torch.nn.functional,
        "grid_sample",
        lambda x, grid, mode="bilinear", padding_mode="zeros", align_corners=None: (
            _GridSampleCuda.apply(x, grid, mode, padding_mode, align_corners)
        ),
    )
    model = build("model.flow_net.init=none", "model.rollout_prob=0")
    items = FlyingDataset(size=(32, 32), num_frames=5, seed=2)
    batch = torch.utils.data.default_collate([items[i] for i in range(2)])
    model.training_step(batch, 0).backward()
    grads = [p.grad for p in model.flow_net.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    from vfi.diffusion.warp_posterior import adjoint
    from vfi.errors import VFIError
    from vfi.ops import warp_backward

    # an operator without a transpose: its autograd adjoint would need that double backward,
    # so under grad it is refused with one line; without grad it still serves
    flow = torch.randn(1, 2, 8, 8, requires_grad=True)

    def no_transpose_warp(u):
        return warp_backward(u, flow)

    with pytest.raises(VFIError, match="no_transpose_warp has no transpose"):
        adjoint(no_transpose_warp, torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        assert adjoint(no_transpose_warp, torch.ones(1, 3, 8, 8)).abs().sum() > 0


def test_next_time_takes_the_samplers_steps():
    """T = 2 with ground truth at 1/4, 1/2, 3/4: from 1/2 the step goes to 3/4 (as factor 4's
    sampler steps) for every other item, to 1 (as factor 2's) for the others, in turn; from
    1/4 always to 1/2, from 3/4 always to 1."""
    model = build("model.flow_net.init=none", "model.num_steps=2")
    times = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64).expand(4, 5)
    start = torch.tensor([0.5, 0.5, 0.25, 0.75], dtype=torch.float64)
    for step, expected in ((0, [0.75, 1.0, 0.5, 1.0]), (1, [1.0, 0.75, 0.5, 1.0])):
        l_k = model.next_time(start, times, step)
        assert l_k.tolist() == expected

    # on the T = 4 grid, items at 1/4, 1/2, 3/4 (the default data) always step to the next
    # grid point: the default model trains as before
    model.num_steps = 4
    for step in (0, 1):
        assert model.next_time(start, times, step).tolist() == [0.75, 0.75, 0.5, 1.0]


@pytest.mark.parametrize(("gain", "share"), [(1.0, 1.0), (3.0, 1.0), (3.0, 0.5)])
def test_direct_path_takes_each_time_in_one_step_from_i1(gain, share):
    """reverse_path=direct: the frame at each requested time is the training step's prediction
    from x_k = I1, mean of q(x_t | I1, I0, I1) plus g times the refiner's residual
    (model.residual_gain = g), built here from the model's parts; its reported variance is the
    one at g = 1 plus s^2 (e_R (g - 1) R)^2 (model.residual_error = e_R); factor 4 costs three
    refiner calls (the T = 8 chain: six) and its frame at 1/4 differs from the chain's."""
    torch.manual_seed(2)
    model = build(
        "model.num_steps=8",
        "model.reverse_path=direct",
        f"model.residual_gain={gain}",
        f"model.residual_error={share}",
    )
    model.eval()
    for p in model.refiner.parameters():  # a refiner with a visible residual
        p.data.normal_(0, 0.05)
    i0, i1 = _pair(b=1, size=32, seed=3)
    taus = [0.25, 0.5, 0.75]
    before = model.network_calls
    with torch.no_grad():
        direct = model.interpolate_times(i0, i1, taus, num_samples=1)
        assert model.network_calls - before == 3
        model.residual_gain = 1.0
        plain = model.interpolate_times(i0, i1, taus, num_samples=1)
        model.residual_gain = gain
        bridge = model.bridge(time_grid(8))
        for (mean, std), (_, plain_std), t in zip(direct, plain, taus, strict=True):
            l = torch.tensor([t, 1.0], dtype=torch.float64)
            f_l0, f_l1, mask = model.motion_at(model.pair_motion(i0, i1, t), l)
            both = model.bridge_terms(torch.cat([i0, i0]), torch.cat([i1, i1]), f_l0, f_l1, l)
            prev, cur = ({k: v[j : j + 1] for k, v in both.items()} for j in (0, 1))
            step = model.step_posterior(bridge, i1, prev, cur, (l[:1], l[1:]))
            dl = torch.tensor([1.0 - t])
            residual = model.refine(step, i1, prev, l[:1].float(), dl, {})
            torch.testing.assert_close(
                mean, (step + gain * residual).clamp(-1, 1), rtol=0, atol=1e-5
            )
            extra = model.uncertainty_scale**2 * (share * (gain - 1) * residual) ** 2
            torch.testing.assert_close(std**2, plain_std**2 + extra, rtol=1e-4, atol=1e-7)
            assert gain == 1 or float(extra.max()) > 1e-4  # the term is visible
        model.reverse_path = "chain"
        chain = model.interpolate_times(i0, i1, taus, num_samples=1)
    assert (chain[0][0] - direct[0][0]).abs().max() > 1e-3


@pytest.mark.parametrize("t", [0.25, 0.5])
def test_refiner_views_average_the_step_and_its_time_reversal(monkeypatch, t):
    """model.refiner_views=2: the frame is the mean of the direct step's frame on (I0, I1, t)
    and the frame of a whole second pass on the reversed pair (I1, I0, 1 - t) with the same
    motion (F_0->1 and F_1->0 exchanged), each at refiner_views=1: the refiner's residual is
    linear in the frame, and the fused prior is the same in both directions. Both views cost one
    batched call, counted as two evaluations."""
    torch.manual_seed(4)
    model = build(
        "model.reverse_path=direct",
        "model.visibility_net=null",
        "model.fallback=none",
        "model.sample_noise=false",
        "model.residual_gain=3.0",
        "model.refiner_views=2",
    )
    model.eval()
    for p in model.refiner.parameters():  # a refiner with a visible residual
        p.data.normal_(0, 0.05)
    i0, i1 = (x * 0.5 for x in _pair(b=1, size=32, seed=5))  # no clamping at +-1
    with torch.no_grad():
        before = model.network_calls
        both = model.interpolate_times(i0, i1, [t], with_std=False)[0][0]
        assert model.network_calls - before == 2
        model.refiner_views = 1
        forward = model.interpolate_times(i0, i1, [t], with_std=False)[0][0]
        motion = model.pair_motion(i0, i1, t)
        reversed_motion = {"f01": motion["f10"], "f10": motion["f01"]}
        monkeypatch.setattr(model, "pair_motion", lambda *args, **kwargs: reversed_motion)
        backward = model.interpolate_times(i1, i0, [1 - t], with_std=False)[0][0]
    assert float(both.abs().max()) < 0.99 and float((forward - backward).abs().max()) > 1e-2
    torch.testing.assert_close(both, (forward + backward) / 2, rtol=0, atol=1e-5)


def test_direct_path_trains_every_step_from_i1(monkeypatch):
    """reverse_path=direct: l_k = 1 for every item, so the refiner is trained on x_k = I1, the
    state the sampler gives it; no rollout runs even at rollout_prob=1 on grid-aligned items."""
    torch.manual_seed(1)
    model = build("model.rollout_prob=1.0", "model.num_steps=8", "model.reverse_path=direct")
    times = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64).expand(4, 5)
    start = torch.tensor([0.5, 0.5, 0.25, 0.75], dtype=torch.float64)
    assert model.next_time(start, times, 0).tolist() == [1.0] * 4
    ds = FlyingDataset(length=2, size=(32, 32), num_frames=9)
    batch = default_collate([ds[i] for i in range(2)])
    monkeypatch.setattr(model, "sample_path", lambda *a, **k: pytest.fail("rollout ran"))
    inputs = []
    refine = model.refine

    def record(mean, x_k, terms, l_prev, dl, extra):
        inputs.append((x_k, l_prev, dl))
        return refine(mean, x_k, terms, l_prev, dl, extra)

    monkeypatch.setattr(model, "refine", record)
    assert torch.isfinite(model.training_step(batch, 0))
    ((x_k, l_prev, dl),) = inputs
    torch.testing.assert_close(x_k, batch["I1"], rtol=0, atol=1e-6)
    torch.testing.assert_close(l_prev + dl, torch.ones_like(dl))
