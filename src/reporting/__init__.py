"""What ``python -m src.report`` uses: a study's tables, figures and statistics, from what its runs saved.

* ``records``: each run read back (numbers, status, variant: the runs averaged together);
* ``study_rows``: the records as rows, lines, residual/plain and depth comparisons, power-law fits, CSV;
* ``statistics``: the tests and the fits; ``paper``: the published numbers; ``protocol``: the one-line protocol;
* ``figures``: error against cost, size to target, training curves; ``depth_profiles``: per-block
  diagnostics against relative depth; ``figure_data``: the numbers behind every figure (``figures.json``);
* ``shapes``: the width x depth heatmap and the iso-parameter pairs; ``anchors``: the Wide and pre-activation
  ResNets' published errors on the figures, when runs follow their protocol;
* ``analysis_plan`` / ``plan_report``: a plan file's hypotheses and verdicts; ``selection_section``: the
  per-variant learning-rate choice; ``markdown``: report.md; ``committed``: results folders, and what
  ``--check`` compares.

It reads the study file and the committed results through ``src.sweeping`` (plan, results index, run
state), never the other way.
"""
