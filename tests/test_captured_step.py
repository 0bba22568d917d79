"""The captured training step (``model.captured_step``): the same training as the eager step, and a clear refusal
where it cannot run.

A CUDA graph needs a GPU, so on a CPU the step is recorded and replayed by a stand-in that re-runs it on the same
fixed buffers: everything around the graph -- the eager warm-up, the capture on cloned inputs, the gradients the
optimizer reads, the fused optimizer with its LR on the device, the schedule stepped by hand, the eager shorter
last batch, Lightning's step count, the logged numbers, checkpoints -- runs as it does on a GPU. With CUDA the same
comparison runs with the real graph, in bf16.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from src.cli import main
from src.modules import ImageClassifier, WarmupCosineLR, classifier
from src.modules.captured_step import CapturedStep, CudaGraph, check_trainer
from tests.helpers import tiny_data, tiny_trainer
from tests.study_runs import QUICKSTART
from tests.test_training_step_reads import WINDOW, HostReadProbe

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class RerunGraph:
    """A CUDA graph's contract on a CPU: ``capture`` runs the step once, each ``replay`` re-runs it on the same
    buffers and writes its outputs into the tensors ``capture`` returned."""

    needs_cuda = False

    def warmup(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def capture(self, step: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        self.step = step
        self.outputs = step()
        return self.outputs

    def replay(self) -> None:
        for key, value in self.step().items():
            self.outputs[key].copy_(value)


def sgd(params) -> torch.optim.Optimizer:  # noqa: ANN001
    return torch.optim.SGD(params, lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)


def schedule(optimizer: torch.optim.Optimizer) -> WarmupCosineLR:
    return WarmupCosineLR(optimizer, warmup_steps=3, warmup_start_factor=0.1)


def trained(tmp_path, captured: bool, graph: type = RerunGraph, device: str = "cpu", epochs: int = 2, **trainer_args):  # noqa: ANN001
    torch.manual_seed(0)
    model = ImageClassifier(
        "resnet8", num_classes=10, optimizer=sgd, lr_scheduler=schedule, lr_scheduler_interval="step",
        label_smoothing=0.1, l1_penalty=1e-5, captured_step=captured,
    )  # fmt: skip
    if model.captured is not None:
        model.captured.new_graph = graph
    trainer = tiny_trainer(tmp_path, max_epochs=epochs, limit_val_batches=0, accelerator=device, **trainer_args)
    torch.manual_seed(1)
    trainer.fit(model, tiny_data(train_size=100, batch_size=32))  # batches of 32, 32, 32, 4 per epoch
    return model, trainer


def test_a_captured_step_trains_exactly_as_the_eager_step(tmp_path):
    eager, eager_trainer = trained(tmp_path / "eager", captured=False)
    captured, captured_trainer = trained(tmp_path / "captured", captured=True)
    step = captured.captured
    assert step is not None and step.captured
    # 8 steps: 3 eager warm-up steps, the capture (step 4), replays of full batches, the two short batches eagerly
    assert (step.eager_steps, step.replays) == (3 + 2, 1 + 2)
    assert captured_trainer.global_step == eager_trainer.global_step == 8
    for (name, a), b in zip(eager.model.state_dict().items(), captured.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name  # weights, BN statistics
    lr = captured_trainer.optimizers[0].param_groups[0]["lr"]
    assert isinstance(lr, Tensor) and float(lr) == pytest.approx(eager_trainer.optimizers[0].param_groups[0]["lr"])
    for key in ("train/loss_epoch", "train/acc", "train/acc_top5"):
        assert float(captured_trainer.callback_metrics[key]) == pytest.approx(
            float(eager_trainer.callback_metrics[key]), abs=1e-5
        ), key


def test_a_captured_runs_checkpoint_holds_plain_learning_rates_and_loads_into_an_eager_run(tmp_path):
    _, trainer = trained(tmp_path, captured=True)
    trainer.save_checkpoint(tmp_path / "captured.ckpt")
    checkpoint = torch.load(tmp_path / "captured.ckpt", weights_only=False)
    assert all(type(group["lr"]) is float for group in checkpoint["optimizer_states"][0]["param_groups"])
    assert all(type(lr) is float for lr in checkpoint["lr_schedulers"][0]["_last_lr"])
    resumed = ImageClassifier("resnet8", num_classes=10, optimizer=sgd, lr_scheduler=schedule,
                              lr_scheduler_interval="step")  # fmt: skip
    more = tiny_trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    more.fit(resumed, tiny_data(train_size=100, batch_size=32), ckpt_path=tmp_path / "captured.ckpt")
    assert more.global_step == 12


def test_on_a_cpu_the_captured_step_says_it_needs_a_gpu(tmp_path):
    with pytest.raises(ValueError, match="captured_step needs a CUDA GPU .* this fit runs on cpu"):
        trained(tmp_path, captured=True, graph=CudaGraph)


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        (SimpleNamespace(world_size=2, precision="bf16-mixed"), "runs in one process, and this fit has 2"),
        (SimpleNamespace(world_size=1, precision="16-mixed"), "cannot replay trainer.precision 16-mixed"),
    ],
)
def test_what_a_graph_cannot_replay_is_refused_with_the_reason(trainer, message):
    with pytest.raises(ValueError, match=message):
        check_trainer(trainer, torch.device("cuda"), CudaGraph)


def test_an_optimizer_without_a_host_free_step_and_a_plateau_schedule_are_refused(tmp_path):
    def rmsprop(params):  # noqa: ANN001, ANN202
        return torch.optim.RMSprop(params, lr=0.01)

    model = ImageClassifier("resnet8", optimizer=rmsprop, captured_step=True)
    with pytest.raises(ValueError, match="RMSprop has no step that runs without reading the host; use one of Adam"):
        model.configure_optimizers()

    def plateau(optimizer):  # noqa: ANN001, ANN202
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)

    model = ImageClassifier("resnet8", lr_scheduler=plateau, captured_step=True)
    with pytest.raises(ValueError, match="cannot feed ReduceLROnPlateau"):
        model.configure_optimizers()
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        CapturedStep(model.training_loss, warmup_steps=0)


@pytest.mark.parametrize("cuda", [False, pytest.param(True, marks=needs_gpu)])
def test_no_captured_step_reads_the_device(tmp_path, cuda):
    """The eager warm-up, the capture, the replays, the optimizer with its LR on the device and the schedule: no
    host read in steps 3 to 12 (on a GPU: under ``torch.cuda.set_sync_debug_mode("error")``)."""
    probe = HostReadProbe(cuda)
    args = {"device": "gpu", "precision": "bf16-mixed", "graph": CudaGraph} if cuda else {}
    model, _ = trained(tmp_path, captured=True, epochs=4, callbacks=[probe], **args)
    assert probe.watched == len(WINDOW) and model.captured is not None and model.captured.replays >= 8
    assert probe.counts == Counter(), f"host reads: {dict(probe.counts)}"


@needs_gpu
def test_on_a_gpu_the_cuda_graph_step_equals_the_eager_step_in_bf16(tmp_path):
    eager, _ = trained(tmp_path / "eager", captured=False, device="gpu", precision="bf16-mixed")
    captured, trainer = trained(tmp_path / "graph", captured=True, graph=CudaGraph, device="gpu",
                                precision="bf16-mixed")  # fmt: skip
    assert captured.captured is not None and captured.captured.replays == 3 and trainer.global_step == 8
    for (name, a), b in zip(eager.model.state_dict().items(), captured.model.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=2e-2, atol=2e-3), name  # bf16 forward/backward, fp32 weights


def test_an_eager_runs_checkpoint_resumes_captured_at_its_step(tmp_path):
    _, trainer = trained(tmp_path, captured=False)
    trainer.save_checkpoint(tmp_path / "eager.ckpt")
    resumed = ImageClassifier("resnet8", num_classes=10, optimizer=sgd, lr_scheduler=schedule,
                              lr_scheduler_interval="step", captured_step=True)  # fmt: skip
    assert resumed.captured is not None
    resumed.captured.new_graph = RerunGraph
    more = tiny_trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    more.fit(resumed, tiny_data(train_size=100, batch_size=32), ckpt_path=tmp_path / "eager.ckpt")
    assert more.global_step == 12 and resumed.captured.eager_steps == 4  # 3 warm-up steps, the short batch


# ---------------------------------------------------------------- the preset, as a user runs it
PRESET = "configs/trainer/cuda_graphs.yaml"
TINY_FIT = ["--model.arch", "resnet8", "--trainer.max_steps", "12", "--data.image_size", "16", "--data.train_size",
            "200", "--data.val_size", "64", "--data.test_size", "64", "--data.batch_size", "32",
            "--data.num_workers", "0", "--model.lr_scheduler.init_args.warmup_steps", "0"]  # fmt: skip


def test_the_preset_on_a_cpu_stops_at_the_start_and_says_why(tmp_path):
    with pytest.raises(SystemExit, match="captured_step needs a CUDA GPU"):
        main(["fit", "--config", QUICKSTART, "--config", PRESET, "--run_dir", str(tmp_path / "run"), *TINY_FIT,
              "--trainer.accelerator", "cpu"])  # fmt: skip
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_preset_through_the_cli_with_every_callback_on_a_cpu_stand_in(tmp_path, monkeypatch):
    """The CLI's callbacks (efficiency record, divergence guard, progress, checkpoints) around a captured step."""
    monkeypatch.setattr(classifier, "CapturedStep", functools.partial(CapturedStep, graph=RerunGraph))
    run = tmp_path / "run"
    main(["fit", "--config", QUICKSTART, "--config", PRESET, "--run_dir", str(run), *TINY_FIT,
          "--trainer.accelerator", "cpu", "--trainer.precision", "32"])  # fmt: skip
    record = json.loads((run / "efficiency.json").read_text())
    assert record["global_step"] == 12 and record["test_acc"] is not None
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(type(group["lr"]) is float for group in saved["optimizer_states"][0]["param_groups"])


@needs_gpu
def test_the_preset_trains_on_a_gpu_and_its_checkpoint_tests_on_a_cpu(tmp_path):
    run = tmp_path / "run"
    gpu = ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed", "--test_after_fit", "false"]
    main(["fit", "--config", QUICKSTART, "--config", PRESET, "--run_dir", str(run), *TINY_FIT, *gpu])
    record = json.loads((run / "efficiency.json").read_text())
    assert record["global_step"] == 12
    loaded = ImageClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert loaded(torch.randn(2, 3, 16, 16)).shape == (2, 10)
