"""What ``python -m src.cli`` uses besides LightningCLI itself: small decisions, each testable without training.

* ``run_dirs``: which directory a command writes to (``--run_dir``, a logger's fixed version, a fresh
  ``lightning_logs/<name>/version_N``, the run a checkpoint belongs to), and pointing the config at it;
* ``checkpoint_config``: a ``--ckpt_path`` checkpoint read before parsing, its saved config turned into
  the command's defaults, and the checks that it fits the model the config builds;
* ``messages``: parse errors and user mistakes as one line (never a stack trace for a config's fault).

``src.cli`` wires these into LightningCLI's hooks; nothing here imports ``src.cli``.
"""
