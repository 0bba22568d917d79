"""The LightningModule: trains any network from ``src.models.build_model`` on labelled images.

It owns the training concern only -- loss, metrics, optimizer and LR schedule -- and knows
nothing of datasets: ``num_classes`` and ``in_channels`` arrive as arguments (the CLI links
them from the DataModule).

The optimizer and scheduler are *injected callables* (LightningCLI's ``OptimizerCallable``
and ``LRSchedulerCallable``): YAML names any ``torch.optim`` class and any
``torch.optim.lr_scheduler`` class with its arguments, and this module decides what the
CLI's automatic mode cannot -- parameter groups without weight decay, and schedules that
step per *iteration* (the paper's 32k/48k milestones) rather than per epoch.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torchmetrics import Metric

from src.models import build_model, parse_arch
from src.models.complexity import NORM_TYPES
from src.models.plugin import build_net, net_name
from src.modules.accuracy import TopKAccuracy, topk_hits
from src.modules.captured_step import (
    CapturedStep,
    CaptureError,
    check_trainer,
    lr_as_numbers,
    lr_on_device,
    make_capture_ready,
    share_step_count,
)
from src.modules.metrics import build_metrics, plain_spec
from src.modules.pruning import PrunedTraining, Pruning
from src.modules.start_weights import load_start_weights

# Options of the named architectures (build_model), with their defaults: a net given by class path takes none of them.
NAMED_NET_OPTIONS = {"shortcut": None, "dropout": 0.0, "pooling": "avg", "block_dropout": 0.0}


def paper_sgd(params: Any) -> torch.optim.Optimizer:
    """He et al.'s optimizer: SGD, lr 0.1, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def split_decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two parameter groups: weights that get weight decay, and norm parameters + biases that don't."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            (no_decay if isinstance(module, NORM_TYPES) or name == "bias" else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class NetOutputError(ValueError):
    """A network whose output is not one logit per class per image: a fork's net that ignores ``num_classes``."""


class _OpenEndedSchedule(Protocol):
    """A schedule that takes its length late (``total_steps`` None until ``configure_optimizers`` sets it)."""

    total_steps: int | None


def _is_built_in(arch: str) -> bool:
    """Whether ``arch`` names one of the built-in (or registered) architectures."""
    try:
        parse_arch(arch)
    except ValueError:
        return False
    return True


class ImageClassifier(pl.LightningModule):
    """Image classification with a ResNet (or plain net) chosen by name, or any network given by class path.

    Args:
        arch: network name for ``build_model`` (``resnet20``, ``plain56``, ``resnet20_4``, ``wrn16_8``,
            ``preact_resnet164``, ``resnet18``, ...; ``src.models.names`` has the grammar).
        num_classes: classes of the data set (linked from the DataModule by the CLI).
        in_channels: image channels (linked from the DataModule by the CLI).
        shortcut: CIFAR shortcut option, ``A`` (parameter-free) or ``B`` (projection); ``null``
            for the family default.
        dropout: dropout probability before the linear head (0 disables it).
        pooling: global pooling before the head, ``avg`` or ``max``.
        block_dropout: dropout between the two convolutions of a basic pre-activation block (Wide ResNets'
            dropout; ``wrn`` and basic ``preact`` nets only).
        net_class: a fork's own network instead of ``arch``: the class path (``my_fork.models.TinyNet``) of any
            ``nn.Module`` subclass, built with the data's ``num_classes`` / ``in_channels`` (``src.models.plugin``).
            Runs then record ``arch`` as its name when that is not a built-in architecture's (a study's
            ``archs`` entry ``{name, net_class, net_args}`` does this), else its class name.
        net_args: the arguments of ``net_class`` (besides ``num_classes`` / ``in_channels``).
        metrics: extra torchmetrics by name, ``{name: {class_path, init_args}}``, logged as ``<stage>/<name>``
            (``num_classes`` from the data; ``src.modules.metrics``).
        init_from: start a fresh fit from another run's trained network: its ``.ckpt`` file, or its run directory
            (the best-by-validation checkpoint). Only the network's tensors are read, and they must fit this network
            (``src.modules.start_weights``); ``efficiency.json`` records where they came from (``init_from``).
        pruning: prune the network at the start of a fresh fit and hold the zeros while it trains
            (``src.modules.pruning.Pruning``): ``{params: 75290}`` (the parameters to keep, e.g. the size of a dense
            net to compare with) or ``{sparsity: 0.7}``, with ``scope`` (``global``) and ``bn_batches`` (50; BN
            statistics re-estimated after pruning). Usually with ``init_from``; ``trainer.max_steps: 0`` measures
            the pruned network without training it.
        label_smoothing: cross-entropy label smoothing.
        optimizer: optimizer factory; default ``paper_sgd``, SGD(lr=0.1, momentum=0.9, weight_decay=1e-4), which the
            saved config names (``null``, as older configs have it, means the same).
        lr_scheduler: optional scheduler factory, any ``torch.optim.lr_scheduler`` class.
        lr_scheduler_interval: ``epoch`` or ``step`` -- what the scheduler's counts mean.
        no_decay_norm_and_bias: put norm parameters and biases in a group with no weight decay.
        l1_penalty: coefficient of an L1 penalty on conv/linear weights, added to the loss.
        channels_last: train in channels-last memory format (faster convolutions on GPUs).
        test_flip: at test time average the logits of each image and its horizontal mirror (flip test-time
            augmentation); validation -- which picks the best checkpoint -- is left as it is.
        captured_step: replay each training step's forward, loss and backward as one CUDA graph, the optimizer step
            as one fused kernel (``src.modules.captured_step``; ``configs/trainer/cuda_graphs.yaml``): one GPU, bf16
            or fp32, SGD / Adam / AdamW; an error says why anything else cannot be captured.
    """

    # save_hyperparameters stores an AttributeDict (attribute access); Lightning's property says any MutableMapping.
    hparams: AttributeDict

    def __init__(
        self,
        arch: str = "resnet20",
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: Literal["A", "B"] | None = None,
        dropout: float = 0.0,
        pooling: Literal["avg", "max"] = "avg",
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = paper_sgd,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        no_decay_norm_and_bias: bool = False,
        l1_penalty: float = 0.0,
        channels_last: bool = False,
        test_flip: bool = False,
        block_dropout: float = 0.0,
        net_class: str | None = None,
        net_args: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        init_from: str | None = None,
        pruning: dict[str, Any] | None = None,
        captured_step: bool = False,
    ) -> None:
        super().__init__()
        if l1_penalty < 0:
            raise ValueError(f"l1_penalty must be >= 0, got {l1_penalty}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        metrics = plain_spec(metrics)  # before save_hyperparameters, which records the arguments as they are now
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = self.build_network()
        if net_class is not None and _is_built_in(arch):
            # What efficiency.json, the report and the tools name it by: the name a study gave it (model.arch,
            # src/sweeping/own_nets.py), else its class name -- never a built-in net's name it was not built as.
            name = net_name(net_class)
            if _is_built_in(name):  # a fork's own ResNet20 was reported as the CIFAR resnet20 (an audit)
                raise ValueError(
                    f"model.net_class {net_class!r}: its class name {name!r} reads as the built-in network "
                    f"{name.lower()!r}, so runs, reports and tools would take it for that one; give it a name of its "
                    f"own with --model.arch (e.g. my_{name.lower()})"
                )
            self.hparams.arch = name
            # hparams.yaml is written from hparams_initial, recorded by save_hyperparameters (from the CLI's
            # arguments when the CLI built the module): it kept the config's arch, resnet14 for a TinyNet run whose
            # checkpoint said TinyNet (an audit).
            cast(AttributeDict, self._hparams_initial).arch = name
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer_factory = optimizer or paper_sgd
        self.scheduler_factory = lr_scheduler
        top_k = (1, 5) if num_classes >= 5 else (1,)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_top{k}": TopKAccuracy(top_k=k)
                for stage in ("val", "test")  # training accuracy: on-device batch means (_log_training)
                for k in top_k
            }
        )
        self.top_k = top_k
        extra = build_metrics(metrics, num_classes)
        self.metrics.update(extra)
        self.extra_metrics = list(dict.fromkeys(key.split("_", 1)[1] for key in extra))
        self.pruned = None if pruning is None else PrunedTraining(Pruning.from_config(pruning))
        if self.pruned is not None:
            self.pruned.pruning.sparsity_of(self.model)  # a parameter count this network cannot reach: said now
        self.start_record: dict[str, Any] | None = None  # model.init_from: where the weights came from
        self.captured = CapturedStep(self.training_loss) if captured_step else None
        self.automatic_optimization = self.captured is None  # a captured step runs its optimizer itself

    # ------------------------------------------------------------------ a fit that starts from a trained network
    def on_fit_start(self) -> None:
        """A fresh fit with ``init_from`` / ``pruning``: load, prune, re-estimate BN (a resumed one restored all)."""
        if self.captured is not None:
            check_trainer(self.trainer, self.device, self.captured.new_graph)
        if self.trainer.ckpt_path is not None:
            return
        hp = self.hparams
        if hp.get("init_from"):
            self.start_record = load_start_weights(self.model, hp.init_from, hp.arch)
        if self.pruned is not None:
            datamodule = getattr(self.trainer, "datamodule", None)
            bn_loader = datamodule.train_dataloader() if datamodule is not None else None
            self.pruned.start(self.model, bn_loader, seed=0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.pruned is not None:
            self.pruned.hold(self.model)  # after the optimizer step: pruned weights stay zero

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pruned is not None:
            checkpoint["pruning"] = self.pruned.state()
        if self.start_record is not None:
            checkpoint["init_from"] = self.start_record
        if self.captured is not None:
            lr_as_numbers(checkpoint)
            share_step_count(checkpoint)  # an eager fit resumes it at its step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pruned is not None and "pruning" in checkpoint:
            self.pruned.load_state(checkpoint["pruning"])
        if "init_from" in checkpoint:
            self.start_record = checkpoint["init_from"]
        if self.captured is not None:
            share_step_count(checkpoint)  # an eager run's checkpoint counted its steps in the automatic counter

    def build_network(self) -> nn.Module:
        """The network, from the hyperparameters: ``net_class`` by class path when given, else ``arch`` by name.

        A subclass may override this to build anything else (``self.hparams`` holds every argument).
        """
        hp = self.hparams
        if hp.get("net_class") is None:
            return build_model(
                hp.arch, hp.num_classes, hp.in_channels, shortcut=hp.shortcut, dropout=hp.dropout,
                pooling=hp.pooling, block_dropout=hp.get("block_dropout", 0.0),
            )  # fmt: skip
        set_for_names = {key: hp[key] for key, default in NAMED_NET_OPTIONS.items() if hp[key] != default}
        if set_for_names:
            raise ValueError(
                f"model.net_class builds its own network: {set_for_names} apply to the named architectures only; "
                "give the net's options in model.net_args"
            )
        return build_net(hp.net_class, hp.get("net_args"), hp.num_classes, hp.in_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.model(x)
        self._check_logits(logits, x)
        return logits

    def _check_logits(self, logits: Tensor, images: Tensor) -> None:
        """One logit per class per image, or a ``NetOutputError`` naming the net, the shape and what it must be.

        Why: a fork's net that ignores its ``num_classes`` argument trained without a word when its head was
        wider than the data's classes (accuracy over logits no label can reach), and failed with cross-entropy's
        raw ``IndexError`` when it was narrower (an audit). Shapes only: nothing is read from the device.
        """
        expected = (images.shape[0], self.hparams.num_classes)
        if tuple(logits.shape) != expected:
            name = self.hparams.get("net_class") or self.hparams.arch
            raise NetOutputError(
                f"the network {name} returned an output of shape {tuple(logits.shape)} for {images.shape[0]} "
                f"images; the data has {expected[1]} classes, so it must return {expected} (one logit per class): "
                "build its head from the num_classes argument it is given"
            )

    def l1_term(self) -> Tensor:
        """Sum of absolute conv and linear weights (norm parameters and biases excluded)."""
        weights = [p for p in self.model.parameters() if p.dim() > 1]
        return torch.stack([p.abs().sum() for p in weights]).sum()

    def training_loss(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """A training step's forward: ``loss`` (what backward differentiates) and what is logged beside it."""
        logits = self(images)
        cross_entropy = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        outputs = {"loss": cross_entropy, "cross_entropy": cross_entropy, "logits": logits}
        if self.hparams.l1_penalty > 0:
            outputs["l1"] = self.l1_term()
            outputs["loss"] = cross_entropy + self.hparams.l1_penalty * outputs["l1"]
        return outputs

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        """Validation and test: epoch-level numbers, which must agree across DDP ranks."""
        images, labels = batch
        logits = self(images)
        if stage == "test" and self.hparams.get("test_flip"):
            logits = (logits + self(images.flip(-1))) / 2
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        for k in self.top_k:
            metric = cast(Metric, self.metrics[f"{stage}_top{k}"])
            metric.update(logits, labels)  # no batch value: logged per epoch only
            name = f"{stage}/acc" if k == 1 else f"{stage}/acc_top{k}"
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=k == 1)
        self._log_extra_metrics(stage, logits, labels)

    def _log_extra_metrics(self, stage: str, logits: Tensor, labels: Tensor) -> None:
        for name in self.extra_metrics:  # configured torchmetrics (training too: they may read the host per step)
            extra = cast(Metric, self.metrics[f"{stage}_{name}"])
            extra(logits, labels)
            self.log(f"{stage}/{name}", extra, on_step=False, on_epoch=True)

    def _log_training(self, outputs: dict[str, Tensor], labels: Tensor) -> None:
        """The training step's numbers, never read back to the host here: a GPU would wait for every read.

        Lightning turns a value logged with ``prog_bar=True`` and ``on_step=True`` into a Python number after every
        batch, so the step loss is not a progress-bar value: the bars read it from ``callback_metrics`` when they
        draw (``src.callbacks.progress``), the logger at its logging steps. The accuracies are on-device batch
        means that Lightning weights by batch size over the epoch (DDP: summed over ranks at the epoch's end) --
        the epoch's micro accuracy, the number a torchmetrics ``MulticlassAccuracy`` gives, without its per-step
        reads (its top-k path one-hot encodes the labels, which checks their range on the host).
        """
        self.log("train/loss", outputs["cross_entropy"], on_step=True, on_epoch=True)
        logits = outputs["logits"].detach()
        for k, hits in topk_hits(logits, labels, self.top_k).items():
            name = "train/acc" if k == 1 else f"train/acc_top{k}"
            self.log(
                name,
                hits.float().mean(),
                on_step=False,
                on_epoch=True,
                prog_bar=k == 1,
                batch_size=labels.shape[0],
                sync_dist=True,
            )
        if "l1" in outputs:
            self.log("train/l1", outputs["l1"], on_step=True, on_epoch=False)
        self._log_extra_metrics("train", logits, labels)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        outputs = self.training_loss(images, labels) if self.captured is None else self._captured_step(images, labels)
        self._log_training(outputs, labels)
        return outputs["loss"]

    def _captured_step(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Forward and backward replayed (``CapturedStep``), then the optimizer's and the schedule's steps."""
        assert self.captured is not None
        optimizer = cast(LightningOptimizer, self.optimizers())
        lr_on_device(optimizer.optimizer, self.device)
        params = [param for param in self.model.parameters() if param.requires_grad]
        outputs = self.captured(params, images, labels)
        optimizer.step()  # Lightning counts the step and runs on_before_optimizer_step
        if self.hparams.lr_scheduler_interval == "step":
            self._step_schedule()
        return outputs

    def _step_schedule(self) -> None:
        schedule = self.lr_schedulers()
        if schedule is not None:
            cast(torch.optim.lr_scheduler.LRScheduler, schedule).step()

    def on_train_epoch_end(self) -> None:
        if self.captured is not None and self.hparams.lr_scheduler_interval == "epoch":
            self._step_schedule()  # automatic optimization steps it itself

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        probabilities = self(images).softmax(dim=-1)
        return {"probabilities": probabilities, "predictions": probabilities.argmax(dim=-1)}

    def configure_optimizers(self) -> Any:
        params = split_decay_groups(self.model) if self.hparams.no_decay_norm_and_bias else self.model.parameters()
        optimizer = self.optimizer_factory(params)
        if self.captured is not None:
            make_capture_ready(optimizer)
        trainer = self._trainer  # None outside a fit (the property would raise)
        if self.scheduler_factory is None or (trainer is not None and trainer.max_steps == 0):  # 0: measure only
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        interval = self.hparams.lr_scheduler_interval
        # e.g. WarmupCosineLR(total_steps=None); a fast_dev_run smoke test (a step or two) keeps it open-ended
        # instead of failing the schedule's check that the run outlasts its warmup.
        # Trainer.fast_dev_run: set by Lightning's setup, not declared on the class.
        if getattr(scheduler, "total_steps", 0) is None and not self.trainer.fast_dev_run:  # type: ignore[attr-defined]
            total = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
            if total is None or total < 0 or total == float("inf"):
                raise ValueError(
                    "The LR schedule needs total_steps, and the trainer does not set max_steps or max_epochs: "
                    "set lr_scheduler.init_args.total_steps"
                )
            cast(_OpenEndedSchedule, scheduler).total_steps = int(total)
        config = {"scheduler": scheduler, "interval": interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.captured is not None:
                raise CaptureError(
                    "model.captured_step steps its LR schedule itself and cannot feed ReduceLROnPlateau its "
                    "validation loss: use a schedule by step or epoch (WarmupCosineLR, MultiStepLR, ...)"
                )
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
