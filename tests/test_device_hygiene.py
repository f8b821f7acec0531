"""GPU readiness proven on the CPU: the training step, the sampler and the validation pass of
each model run with the model and the batch on the ``meta`` device (which, like CUDA, refuses
to mix with CPU tensors and to be read on the host), under a dispatch mode that records every
host read of a device tensor (``.item()``, ``bool()``, ``float()``, ``int()``), every copy
between the device and the CPU, and every CPU tensor (more than a scalar) meeting a device one.
The record is empty."""

import traceback

import pytest
import torch
from conftest import LPIPS_BACKBONE
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from vfi.data.datamodule import MeasuringCollate
from vfi.utils.run import CONF_DIR

aten = torch.ops.aten
HOST_READS = {aten._local_scalar_dense.default, aten.equal.default}


def _where() -> str:
    """The innermost vfi frame of the current stack: where a recorded call came from."""
    frames = [f for f in traceback.extract_stack() if "/vfi/" in f.filename]
    return f"{frames[-1].filename.split('/vfi/')[-1]}:{frames[-1].lineno}" if frames else "?"


class HostSyncs(TorchDispatchMode):
    """Records (as ``self.found``) every op that would stall or break a GPU step: a host read
    of a device tensor, a copy between the CPU and the device, or a CPU tensor with elements
    meeting a device tensor. Host reads are answered with 0 and CPU operands moved, so the
    pass goes on and every site is found."""

    def __init__(self, device: str = "meta"):
        super().__init__()
        self.device = device
        self.found: list[str] = []

    def _moved(self, x):
        if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() > 0:
            return x.to(self.device)
        return x

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        on_device = any(t.device.type == self.device for t in tensors)
        if on_device and func in HOST_READS:
            self.found.append(f"{func.__name__} at {_where()}")
            return False if func is aten.equal.default else 0
        if on_device and any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
            self.found.append(f"CPU tensor in {func.__name__} at {_where()}")
            args, kwargs = tree_map(self._moved, (args, kwargs))  # and go on
        out = func(*args, **kwargs)
        outs = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
        if on_device and any(t.device.type == "cpu" for t in outs):
            self.found.append(f"device-to-CPU copy by {func.__name__} at {_where()}")
        elif not on_device and any(t.device.type == self.device for t in outs):
            if any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
                self.found.append(f"CPU-to-device copy by {func.__name__} at {_where()}")
        return out


def _model(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.log = lambda *args, **kwargs: None  # Lightning's logging needs a trainer
    return model


def _batch(model, split: str, b=2, size=64, taus=(0.25, 0.5, 0.75), device="meta"):
    """A batch as the DataLoader's workers give it for ``split`` (with what the model asks
    them to measure), moved to ``device`` as Lightning moves it."""
    n = len(taus)
    items = [
        {
            "I0": torch.rand(3, size, size) * 2 - 1,
            "I1": torch.rand(3, size, size) * 2 - 1,
            "gt": torch.rand(n, 3, size, size) * 2 - 1,
            "taus": torch.tensor(taus),
        }
        for _ in range(b)
    ]
    batch = MeasuringCollate(**model.batch_measures()[split])(items)
    batch.pop("skipped")
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


CASES = {
    "warp_posterior (default: DIS flow, scene cuts)": ("model=warp_posterior",),
    "resshift": ("model=resshift",),
    "autoencoder (VQ)": ("model=autoencoder",),
    # rollout (the sampler inside the step) in every batch
    "warp_posterior (learned flow)": (
        "model=warp_posterior",
        "model/flow_net=learned",
        "model.rollout_prob=1.0",
    ),
    # motion refresh on a DIS-initialised flow net: it starts from the current flows, no DIS
    "warp_posterior (DIS flow, motion refresh every step, rollout in every batch)": (
        "model=warp_posterior",
        "model.motion_refresh=1",
        "model.rollout_prob=1.0",
    ),
    "resshift (DIS flow, motion refresh)": (
        "model=resshift",
        "model/flow_net=dis",
        "model.motion_refresh=2",
    ),
    # each time one step from I1, no visibility net (the release's sampler and fusion)
    "warp_posterior (direct path, no visibility net)": (
        "model=warp_posterior",
        "model/flow_net=learned",
        "model.reverse_path=direct",
        "model.visibility_net=null",
    ),
    "warp_posterior (exact posterior)": (
        "model=warp_posterior",
        "model/flow_net=learned",
        "model.posterior=exact",
        "model.cg_tol=0",
    ),
}


def _run(model, action):
    model.to("meta")
    with HostSyncs() as syncs:
        action()
    return syncs.found


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_neither_sync_nor_touch_the_cpu(case):
    model = _model(*CASES[case], "model.lpips_weight=0").train()
    batches = [_batch(model, "train") for _ in range(2)]
    found = _run(model, lambda: [model.training_step(batch, i) for i, batch in enumerate(batches)])
    assert found == []


@pytest.mark.skipif(LPIPS_BACKBONE is None, reason="../shared (LPIPS weights) is absent")
def test_the_lpips_loss_follows_the_module_to_the_device():
    """The LPIPS network (held outside the state dict) is loaded onto, and moved with, the
    module's device: its loss term runs on meta with no CPU weight."""
    model = _model(
        "model=warp_posterior",
        "model/flow_net=learned",
        "model.lpips_weight=0.1",
        f"model.lpips_backbone={LPIPS_BACKBONE}",
    ).train()
    assert model.lpips_net is not None and "lpips" not in " ".join(model.state_dict())
    batch = _batch(model, "train")
    assert _run(model, lambda: model.training_step(batch, 0)) == []
    assert {p.device.type for p in model.lpips_net.parameters()} == {"meta"}


@pytest.mark.parametrize("case", list(CASES))
def test_sampler_pass_neither_syncs_nor_touches_the_cpu(case):
    model = _model(*CASES[case], "model.lpips_weight=0").eval()
    sequence, single = _batch(model, "val"), _batch(model, "val", taus=(0.5,))
    found = _run(
        model,
        # with the samples the workers measured the flip views for (the model's val_samples)
        lambda: [model.evaluation_outputs(b, model.samples["val"]) for b in (sequence, single)],
    )
    assert found == []


def test_the_detector_finds_a_host_read_and_a_cpu_tensor():
    """A deliberate .item() and a CPU tensor put into a step are both caught."""
    model = _model("model=resshift", "model.lpips_weight=0").train()
    step = type(model).training_step

    def leaky(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        _ = loss.item()
        return loss + (torch.ones(3) * batch["I0"].flatten()[:3]).sum()

    batch = _batch(model, "train")
    found = _run(model, lambda: leaky(model, batch, 0))
    assert len(found) == 2 and "_local_scalar_dense" in found[0] and "CPU tensor" in found[1]


def test_gpu_trainers_get_tf32_and_pinned_memory():
    """device_settings: a CUDA trainer turns on TF32 and pinned DataLoader memory; a CPU
    trainer changes neither."""
    from types import SimpleNamespace

    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    from vfi.data.datamodule import VFIDataModule
    from vfi.utils.run import device_settings

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        data = VFIDataModule()
        device_settings(SimpleNamespace(accelerator=CPUAccelerator()), data)
        assert not torch.backends.cuda.matmul.allow_tf32 and not data.pin_memory
        device_settings(SimpleNamespace(accelerator=CUDAAccelerator()), data)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert data.pin_memory
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_compiled_networks_train_as_the_eager_ones_and_keep_their_keys():
    """compile=<backend> (vfi.train) compiles the trainable networks in place: the same loss
    and gradients as eager on the same batch, graphs really compiled, state-dict keys unchanged
    (checkpoints stay interchangeable)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = _model("model=resshift", "model.lpips_weight=0").train()
    compiled = _model("model=resshift", "model.lpips_weight=0").train()
    assert compiled.compile_networks("aot_eager") == ["flow_net", "visibility_net", "denoiser"]
    batch = _batch(eager, "train", device="cpu")
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(1)
        loss = model.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert eager.state_dict().keys() == compiled.state_dict().keys()
