"""Run a study arm on a machine that goes away: one unit at a time, from a worktree pinned to the arm's commit,
each finished unit committed into this checkout at once.

    python -m scripts.study_driver run configs/studies/cifar10_frontier_16ep.yaml --commit 1a2b3c4 --until 20:15
    python -m scripts.study_driver run STUDY --commit SHA --dry-run      # the units and what of each is committed
    python -m scripts.study_driver commit STUDY --commit SHA --plan configs/studies/plans/cifar10_frontier.yaml \\
        resnet56/seed0 resnet56-p8/seed0 ...                            # by hand: what ``run`` does after a unit

Why a driver, not ``python -m src.sweep`` alone (what the depth study's ``scripts/depth_study/run.sh`` taught):

* **One code version per arm.** The runs train in a git worktree (default ``../study-<study>``) at ``--commit``, with
  the packages pinned (``PINS``); ``commit`` refuses a run trained at another commit, from a dirty tree, resumed, or on
  another kind of device or other packages than the arm's committed runs.
* **Checkpoints do not outlive the machine.** A pruned entry's run starts from its parent's checkpoint, so a *unit*
  is a dense run together with every pruned run that starts from it (and, for a variant's first unit, its selection
  runs, which the sweep makes first): a unit is made in one sitting and committed whole. A unit whose parent was
  committed from another machine cannot be finished here (its checkpoint is gone): the driver says so and skips it.
* **A session ends at a known time** (``--until``): during a unit's first minutes its first run's ETA (the
  ``[train] ... eta`` lines of ``src.callbacks.progress``) is scaled to the whole unit's steps; a unit that would not
  end in time is stopped and its runs moved aside (``.interrupted/``), and the driver tries the next, smaller one.
* **A run cut off is started again from nothing**, never resumed (a resumed run is not one clean run of the arm):
  its files are moved into ``<study dir>/.interrupted/``, never deleted.
* **What is committed is what the sweep sees**: the main checkout's committed results of the study are copied into
  the worktree before each unit, so the sweep skips them and the selection reads the committed selection runs (a
  copy no longer committed, with no run of this machine behind it, is moved aside: the run is made again). To make
  again a run trained on this machine, ``git rm`` its result *and* move its run folder out of the worktree.
* **A pruned run is committed only with the parent it started from**: its ``init_from`` checkpoint must be the
  parent's, byte for byte (sha256), and a dense run only with all its pruned runs (or after them).
* **Stopped, it stops its sweep** (SIGTERM, SIGHUP, Ctrl-C): no training goes on without it, holding a run's lock.
"""
