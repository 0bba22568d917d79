"""The LightningModule: metrics logged, optimizer groups, per-step schedules, L1, checkpoints."""

from __future__ import annotations

import re
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from src.modules import ImageClassifier, WarmupCosineLR
from src.modules.classifier import split_decay_groups
from tests.helpers import tiny_data, tiny_trainer


class RecordLR(pl.Callback):
    """Learning rate seen by each optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def sgd(lr: float = 0.1, weight_decay: float = 1e-4):
    return partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=weight_decay)


def test_fit_and_test_log_the_documented_metrics(tmp_path):
    model = ImageClassifier("resnet8", num_classes=10, optimizer=sgd())
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, tiny_data())
    logged = set(trainer.callback_metrics)
    assert {"train/loss", "train/acc", "train/acc_top5", "val/loss", "val/acc", "val/acc_top5"} <= logged
    results = trainer.test(model, tiny_data(), verbose=False)[0]
    assert set(results) == {"test/loss", "test/acc", "test/acc_top5"}
    assert 0.0 <= results["test/acc"] <= results["test/acc_top5"] <= 1.0


def test_top5_only_with_at_least_five_classes(tmp_path):
    model = ImageClassifier("resnet8", num_classes=4, optimizer=sgd())
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, tiny_data(num_classes=4))
    assert "val/acc" in trainer.callback_metrics and "val/acc_top5" not in trainer.callback_metrics


def test_default_optimizer_is_the_paper_sgd():
    optimizer = ImageClassifier("resnet8").configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)


def test_no_weight_decay_on_norm_and_bias():
    model = ImageClassifier("resnet20", optimizer=sgd(weight_decay=5e-4), no_decay_norm_and_bias=True)
    optimizer = model.configure_optimizers()
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    # ResNet-20: 1,376 batch-norm parameters + the head's 10 biases; everything else is a weight.
    assert sum(p.numel() for p in no_decay["params"]) == 1376 + 10
    assert sum(p.numel() for p in decay["params"]) == 269_722 - 1386
    assert all(p.dim() > 1 for p in decay["params"])
    assert len(split_decay_groups(model.model)) == 2


def test_multistep_schedule_counts_iterations_not_epochs(tmp_path):
    """The paper divides the lr by 10 at *iterations* 32k and 48k; here at iterations 3 and 6."""
    scheduler = partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[3, 6], gamma=0.1)
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=scheduler, lr_scheduler_interval="step")
    record = RecordLR()
    trainer = tiny_trainer(tmp_path, max_epochs=None, max_steps=8, callbacks=[record], limit_val_batches=0)
    trainer.fit(model, tiny_data(train_size=256))  # 8 batches: one epoch
    assert record.lrs == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 2)


def test_epoch_interval_keeps_the_lr_within_an_epoch(tmp_path):
    scheduler = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=scheduler, lr_scheduler_interval="epoch")
    record = RecordLR()
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[record], limit_val_batches=0)
    trainer.fit(model, tiny_data())  # 4 batches per epoch
    assert record.lrs == pytest.approx([0.1] * 4 + [0.05] * 4)


def test_warmup_cosine_fills_total_steps_from_the_trainer(tmp_path):
    scheduler = partial(WarmupCosineLR, warmup_steps=2, warmup_start_factor=0.1)
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=scheduler, lr_scheduler_interval="step")
    record = RecordLR()
    trainer = tiny_trainer(tmp_path, max_epochs=3, callbacks=[record], limit_val_batches=0)
    trainer.fit(model, tiny_data())  # 4 batches x 3 epochs = 12 steps
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 12
    assert record.lrs[:3] == pytest.approx([0.01, 0.055, 0.1])
    assert all(a >= b for a, b in zip(record.lrs[2:], record.lrs[3:]))  # cosine decays monotonically
    assert record.lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 9 / 10)).item()))


def test_reduce_on_plateau_monitors_val_loss():
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau)
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/loss"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_l1_penalty_is_added_to_the_loss():
    torch.manual_seed(0)
    plain = ImageClassifier("resnet8", optimizer=sgd())
    penalised = ImageClassifier("resnet8", optimizer=sgd(), l1_penalty=1e-5)
    penalised.load_state_dict(plain.state_dict())
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    base = plain.training_step((images, labels), 0)
    total = penalised.training_step((images, labels), 0)
    expected_l1 = sum(p.abs().sum() for n, p in penalised.model.named_parameters() if p.dim() > 1)
    assert torch.allclose(total - base, 1e-5 * expected_l1)


def test_label_smoothing_changes_the_loss():
    torch.manual_seed(0)
    model = ImageClassifier("resnet8", label_smoothing=0.1).eval()
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    logits = model(images)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert not torch.isclose(expected, F.cross_entropy(logits, labels))
    assert model.hparams.label_smoothing == 0.1


def test_checkpoint_describes_itself(tmp_path):
    model = ImageClassifier("plain14", num_classes=10, shortcut="B", dropout=0.1, optimizer=sgd())
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, tiny_data())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path)
    assert (restored.hparams.arch, restored.hparams.shortcut, restored.hparams.dropout) == ("plain14", "B", 0.1)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(restored.eval()(x), model.eval()(x))


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    standard = ImageClassifier("resnet8").eval()
    fast = ImageClassifier("resnet8", channels_last=True).eval()
    fast.load_state_dict(standard.state_dict())
    assert fast.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(fast(x), standard(x), atol=1e-5)


def test_predict_returns_probabilities_and_classes(tmp_path):
    model = ImageClassifier("resnet8")
    trainer = tiny_trainer(tmp_path)
    outputs = trainer.predict(model, tiny_data())
    first = outputs[0]
    assert first["probabilities"].shape == (32, 10)
    assert torch.allclose(first["probabilities"].sum(1), torch.ones(32))
    assert torch.equal(first["predictions"], first["probabilities"].argmax(1))


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="l1_penalty"):
        ImageClassifier("resnet8", l1_penalty=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ImageClassifier("resnet8", label_smoothing=1.0)
    with pytest.raises(ValueError, match="Unknown architecture"):
        ImageClassifier("resnet9000x")


def test_warmup_as_long_as_the_run_is_a_clear_error(tmp_path):
    scheduler = partial(WarmupCosineLR, warmup_steps=8)
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=scheduler, lr_scheduler_interval="step")
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=0)  # 4 batches x 2 epochs = 8 steps
    with pytest.raises(ValueError, match=r"total_steps \(8\) must be larger than warmup_steps \(8\)"):
        trainer.fit(model, tiny_data())


def test_fast_dev_run_leaves_a_long_warmup_open_ended(tmp_path):
    scheduler = partial(WarmupCosineLR, warmup_steps=500)
    model = ImageClassifier("resnet8", optimizer=sgd(), lr_scheduler=scheduler, lr_scheduler_interval="step")
    trainer = tiny_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, tiny_data())  # a smoke test of one step: no schedule error
    assert trainer.global_step == 1 and trainer.lr_scheduler_configs[0].scheduler.total_steps is None


def test_test_flip_scores_the_mean_of_each_image_and_its_mirror(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier("resnet8", num_classes=10, test_flip=True)
    data = tiny_data()
    accuracy = tiny_trainer(tmp_path).test(model, data, verbose=False)[0]["test/acc"]
    images, labels = data.test_set.tensors
    model.eval()
    with torch.no_grad():
        flipped = (model(images) + model(images.flip(-1))) / 2
        single = model(images)
    assert accuracy == pytest.approx((flipped.argmax(-1) == labels).float().mean().item())
    assert not torch.equal(flipped.argmax(-1), single.argmax(-1))  # the mirror really changes predictions here


# ------------------------------------------------------------------------------------------- metrics by config
MACRO = {
    "acc_macro": {"class_path": "torchmetrics.classification.MulticlassAccuracy", "init_args": {"average": "macro"}}
}


def test_a_configured_metric_is_logged_per_stage_with_the_hand_computed_value(tmp_path):
    """model.metrics: a macro-averaged accuracy, num_classes from the data, equal to the mean per-class recall."""
    torch.manual_seed(0)
    model = ImageClassifier("resnet8", num_classes=10, metrics=MACRO)
    data = tiny_data()
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, data)
    assert {"train/acc_macro", "val/acc_macro"} <= set(trainer.callback_metrics)  # epoch values, like */acc
    logged = trainer.test(model, data, verbose=False)[0]
    data.setup("test")
    model.eval()
    with torch.no_grad():
        pairs = [(model(x).argmax(1), y) for x, y in data.test_dataloader()]
    predicted, labels = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in labels.unique()]
    assert logged["test/acc_macro"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-6)
    assert logged["test/acc"] == pytest.approx(float((predicted == labels).float().mean()), abs=1e-6)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"acc": MACRO["acc_macro"]}, "'acc' is logged by the classifier already"),
        ({"acc macro": MACRO["acc_macro"]}, "a metric name must be an identifier"),
        # The built-in accuracies are kept as <stage>_top<k>: a metric named so replaced the run's test_acc.
        ({"top1": MACRO["acc_macro"]}, "'top1' is the name of the classifier's own top-k accuracy"),
        ({"top5": MACRO["acc_macro"]}, "'top5' is the name of the classifier's own top-k accuracy"),
        ({"m": {"class_path": "torch.nn.Linear"}}, "is the class Linear, not a torchmetrics.Metric subclass"),
        ({"m": {"class_path": "torchmetrics.NoSuchMetric"}}, "cannot import 'torchmetrics.NoSuchMetric'"),
        ({"m": {"init_args": {}}}, "model.metrics.m: give class_path"),
        ({"m": {"class_path": "torchmetrics.classification.MulticlassAccuracy", "init_args": {"average": "x"}}},
         "model.metrics.m: torchmetrics.classification.MulticlassAccuracy("),
    ],
)  # fmt: skip
def test_a_bad_metric_entry_is_one_clear_error(metrics, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageClassifier("resnet8", num_classes=10, metrics=metrics)
