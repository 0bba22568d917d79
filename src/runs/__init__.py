"""Run directories: the one place that knows their layout.

A *run* is one training of one configuration. Everything it writes lives in one directory::

    <run_dir>/
      config.yaml            the resolved config (a resumed run adds config-1.yaml, ... beside it)
      hparams.yaml           the model's hyperparameters (Lightning)
      efficiency.json        parameters, MACs, accuracy per parameter (one record, continued on resume)
      events.out.tfevents.*  TensorBoard (the default logger; CSV, W&B, MLflow files when configured)
      scalars.csv            every logged scalar as ``step,tag,value``, whatever the logger (the report reads it)
      loggers.json           the W&B / MLflow run ids, so a resumed run logs into the same logger run
      predictions.csv        written by ``predict``
      checkpoints/           best-by-val ``epoch...-step...-val_acc....ckpt`` and ``last.ckpt``
      hpc_ckpt_<N>.ckpt      Lightning's SLURM requeue checkpoints, and the checkpoint a fit saves when it
                             gets SIGTERM (the run directory is the Trainer's ``default_root_dir``, so no
                             other run ever sees them)
      evaluations/           what ``test`` / ``validate`` / ``predict`` on an existing run recorded
                             (``test.json``, ``test-1.json``, ``test-config.yaml``, ...), kept apart from
                             the fit's own ``efficiency.json``
      run.lock               held (flock) by the one process writing the run; names it (pid, host)
      slurm.json             under SLURM: the job that started the run (and every later start), so a
                             requeue continues it and a new job is refused (``src.cli_support.slurm_job``)

The directory is ``--run_dir DIR`` when given (a sweep or a SLURM job names it), else a fresh
``lightning_logs/<logger name>/version_N``. The CLI, the sweep, the report and the checkpoint
tools (lesion, pruning) find checkpoints and saved files through the functions here and never
build these paths by hand.

The package, one job per module (everything is re-exported here: ``from src import runs; runs.X``):

* ``layout``: the file names above, version directories, numbered files (``config-1.yaml``, ...);
* ``checkpoints``: which checkpoint to resume from / is best / ``--ckpt_path`` means, loading one as a run;
* ``lock``: ``run.lock``, one writer per run;
* ``readers``: the saved files read back (config, ``efficiency.json``, scalars, status), tolerant of
  missing or half-written files, and the run directories under a folder.
"""

from __future__ import annotations

from src.runs.checkpoints import (
    REFUSED_PICKLE,
    UnreadableCheckpoint,
    best_checkpoint,
    check_classes,
    checkpoint_run_config,
    datamodule_config,
    has_checkpoints,
    hpc_checkpoints,
    last_checkpoint,
    load_checkpoint_run,
    read_checkpoint,
    resolve_checkpoint,
    resume_checkpoint,
)
from src.runs.layout import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_RECORD,
    DEFAULT_MODEL_CLASS,
    EFFICIENCY_FILE,
    EVALUATIONS_DIR,
    HPC_PREFIX,
    LAST_CHECKPOINT,
    LOCK_FD_ENV,
    LOCK_FILE,
    LOGGERS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_CONFIG_KEY,
    SCALARS_FILE,
    CheckpointFallbackWarning,
    RunBusy,
    RunError,
    checkpoint_dir,
    config_files,
    evaluation_file,
    fit_records,
    is_existing_run,
    next_version_dir,
    numbered_files,
    run_dir_of_checkpoint,
)
from src.runs.lock import (
    RunLock,
)
from src.runs.readers import (
    Curves,
    RunStatus,
    find_run_dirs,
    flatten,
    is_run_dir,
    network_params,
    read_config,
    read_data_record,
    read_efficiency,
    read_json,
    read_metrics,
    read_metrics_csv,
    read_scalars,
    run_seed,
    run_status,
)

__all__ = [
    "flatten",
    "CHECKPOINT_DIR",
    "REFUSED_PICKLE",
    "CONFIG_FILE",
    "CheckpointFallbackWarning",
    "Curves",
    "DATA_RECORD",
    "DEFAULT_MODEL_CLASS",
    "EFFICIENCY_FILE",
    "EVALUATIONS_DIR",
    "HPC_PREFIX",
    "LAST_CHECKPOINT",
    "LOCK_FD_ENV",
    "LOCK_FILE",
    "LOGGERS_FILE",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "RUN_CONFIG_KEY",
    "RunBusy",
    "RunError",
    "RunLock",
    "RunStatus",
    "SCALARS_FILE",
    "best_checkpoint",
    "checkpoint_dir",
    "checkpoint_run_config",
    "config_files",
    "datamodule_config",
    "evaluation_file",
    "find_run_dirs",
    "fit_records",
    "has_checkpoints",
    "hpc_checkpoints",
    "is_existing_run",
    "is_run_dir",
    "last_checkpoint",
    "check_classes",
    "load_checkpoint_run",
    "next_version_dir",
    "numbered_files",
    "UnreadableCheckpoint",
    "read_checkpoint",
    "read_config",
    "read_data_record",
    "network_params",
    "read_efficiency",
    "read_json",
    "read_metrics",
    "read_metrics_csv",
    "read_scalars",
    "resolve_checkpoint",
    "resume_checkpoint",
    "run_dir_of_checkpoint",
    "run_seed",
    "run_status",
]
