"""What ``python -m src.report`` uses: a study's tables, figures and statistics, from what its runs saved.

``tables`` turns run directories into rows (variants, lines, statistics, fits), ``figures`` draws
error against cost and the training curves, ``statistics`` holds the tests and the power-law fit,
``paper`` the published numbers compared against, ``protocol`` the one-line training protocol,
``depth_profiles`` the per-block diagnostics against relative depth. It reads the study file and
the committed results through ``src.sweeping`` (plan, results index, run state), never the other way.
"""
