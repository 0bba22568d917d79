"""What ``python -m src.sweep`` uses: a study file turned into runs, started, watched and exported.

``study`` reads the study file, ``plan`` plans its runs (one command, one directory each), ``run_state``
decides what an existing run directory means (finished, resumable, stale), ``slots`` shares the
GPUs / CPUs among concurrent runs, ``slurm`` writes the sbatch array script, and ``results`` copies
finished runs into the study's committed results folder (which ``src.report`` reads back).
"""
