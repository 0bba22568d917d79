"""No host read between two logging steps: the training step and every callback the CLI adds leave their numbers on
the device (a GPU would wait for each read: issue 29), and the training accuracy they log is still the epoch's
micro accuracy. Validation and test batches read nothing either (their top-5 accuracy once read the labels' range
twice per batch), and their accuracies are still torchmetrics' micro accuracies, from exact counts.

On a CPU nothing waits, so the test watches the operations that would make a CUDA device wait -- a tensor's value
read on the host (``aten::_local_scalar_dense``: ``.item()``, ``float()``, ``bool()``, ``.cpu()`` of a GPU tensor)
and the ops whose output size depends on values (``nonzero``, ``unique``, ``bincount``, ``masked_select``, ...)
-- with a ``TorchDispatchMode`` around each whole step (forward, backward, optimizer, callbacks). With CUDA the same
steps run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchmetrics.classification import MulticlassAccuracy

from src.cli import main
from src.modules import ImageClassifier
from src.modules.accuracy import TopKAccuracy
from tests.helpers import tiny_data, tiny_trainer
from tests.study_runs import QUICKSTART

WAITS_ON_DEVICE = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "bincount",
                   "masked_select", "repeat_interleave", "_assert_async", "histc"}  # fmt: skip
WINDOW = range(3, 13)  # steps far from every logging step (log_every_n_steps and the divergence check: 50)


class _Reads(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func._overloadpacket.__name__
        if name in WAITS_ON_DEVICE:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


class HostReadProbe(pl.Callback):
    """Watches each training step in ``WINDOW`` from its batch start to the next batch's start (callbacks
    included), and each validation and test batch from its start to its end."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.counts: Counter = Counter()
        self.watched = 0
        self.eval_counts: Counter = Counter()  # each validation and test batch, its step and its callbacks
        self.eval_watched = 0
        self._mode: _Reads | None = None

    def _stop(self) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        elif self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._stop()
        if trainer.global_step in WINDOW:
            self.watched += 1
            if self.cuda:
                torch.cuda.set_sync_debug_mode("error")  # any sync raises inside the step
            else:
                self._mode = _Reads(self.counts)
                self._mode.__enter__()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._stop()

    def _watch_eval_batch(self) -> None:
        self._stop()
        self.eval_watched += 1
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error")
        else:
            self._mode = _Reads(self.eval_counts)
            self._mode.__enter__()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._watch_eval_batch()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._watch_eval_batch()

    def on_validation_batch_end(self, *args) -> None:  # noqa: ANN002
        self._stop()

    def on_test_batch_end(self, *args) -> None:  # noqa: ANN002
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: ANN001
        self._stop()


@pytest.mark.parametrize(
    "cuda", [False, pytest.param(True, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
)
def test_no_step_between_logging_steps_reads_the_device(tmp_path, monkeypatch, cuda):
    probe = HostReadProbe(cuda)
    original = pl.Trainer.__init__

    @functools.wraps(original)  # the CLI reads the Trainer's arguments from its signature
    def with_probe(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), probe]
        original(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", with_probe)
    main(["fit", "--config", QUICKSTART, "--run_dir", str(tmp_path / "run"), "--model.arch", "resnet8",
          "--trainer.max_steps", "20", "--trainer.log_every_n_steps", "50", "--divergence.check_every_n_steps", "50",
          "--trainer.accelerator", "gpu" if cuda else "cpu", "--trainer.precision", "bf16-mixed" if cuda else "32",
          "--data.image_size", "16", "--data.train_size", "640", "--data.val_size", "64", "--data.test_size", "64",
          "--data.batch_size", "32", "--data.num_workers", "0", "--model.lr_scheduler.init_args.warmup_steps", "0",
          "--trainer.num_sanity_val_steps", "0"])  # fmt: skip
    assert probe.watched == len(WINDOW)
    assert probe.counts == Counter(), f"host reads between logging steps: {dict(probe.counts)}"
    assert probe.eval_watched == 2 + 2  # the epoch's validation and the test after fit: 64 images each, batches of 32
    assert probe.eval_counts == Counter(), f"host reads in validation or test batches: {dict(probe.eval_counts)}"
    scalars = (Path(tmp_path / "run") / "scalars.csv").read_text()
    for name in ("train/acc", "val/acc_top5", "test/acc_top5"):  # still logged, per epoch
        assert name in scalars


def test_training_accuracy_is_the_epochs_micro_accuracy_over_unequal_batches(tmp_path):
    """The on-device batch means Lightning weights by batch size equal correct / seen over the epoch (the last batch
    is smaller), top-1 and top-5, as the forward passes that trained saw them."""
    torch.manual_seed(0)
    model = ImageClassifier("resnet8", num_classes=10)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            self.labels = batch[1]

    record = Record()
    model.model.register_forward_hook(lambda module, inputs, output: seen.append((output.detach(), record.labels)))
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[record])
    trainer.fit(model, tiny_data(train_size=100, batch_size=32))  # batches of 32, 32, 32, 4
    assert [len(labels) for _, labels in seen] == [32, 32, 32, 4]
    logits, labels = torch.cat([o for o, _ in seen]), torch.cat([y for _, y in seen])
    top1 = float((logits.argmax(-1) == labels).float().mean())
    top5 = float((logits.topk(5, dim=-1).indices == labels[:, None]).any(-1).float().mean())
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(top1, abs=1e-6)
    assert float(trainer.callback_metrics["train/acc_top5"]) == pytest.approx(top5, abs=1e-6)


@pytest.mark.parametrize("top_k", [1, 5])
def test_eval_accuracy_equals_torchmetrics_micro_accuracy(top_k):
    """The device-side count gives torchmetrics' ``MulticlassAccuracy(average="micro")`` over an epoch of unequal
    batches, tied logits (coarse bf16 values) included."""
    generator = torch.Generator().manual_seed(0)
    ours, theirs = TopKAccuracy(top_k=top_k), MulticlassAccuracy(10, top_k=top_k, average="micro")
    for size in (32, 32, 7):
        logits = torch.randn(size, 10, generator=generator).mul(2).round().to(torch.bfloat16).float()
        labels = torch.randint(0, 10, (size,), generator=generator)
        ours.update(logits, labels)
        theirs.update(logits, labels)
    assert int(ours.seen) == 71
    assert float(ours.compute()) == float(theirs.compute())


@pytest.mark.parametrize("top_k", [0, -1, 2.0])
def test_a_top_k_that_is_not_a_positive_integer_is_refused(top_k):
    with pytest.raises(ValueError, match=f"top_k must be a positive integer, got {top_k!r}"):
        TopKAccuracy(top_k=top_k)
