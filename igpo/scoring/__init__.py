"""Scoring shared by evaluation metrics and RL rewards: the one definition of a correct answer.

* :mod:`igpo.scoring.answers` -- what is correct: answer extraction, gold strings, the strict
  metric, the in-process fast verdict and the math-verify call.
* :mod:`igpo.scoring.pool` -- `verify_answer` / `verify_answers`: math-verify correctness on a
  bounded pool of worker processes, its size and counters, verdicts shared within an evaluation.
* :mod:`igpo.scoring.worker` -- one worker process: what runs in it and the handle that runs it.

Callers import from the module that owns a name (nothing is re-exported here). The package must
stay importable without torch, ``harness`` or ``tasks`` (RL code imports it).
"""
