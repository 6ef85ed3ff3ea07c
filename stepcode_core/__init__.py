"""StepCode's method, with no Dagster in it: usable from a notebook or a plain script.

One subpackage per stage of the pipeline, in the order data flows:

* ``tracing`` — execution-trace anchors (P -> P') and ground-truth traces run in the sandbox;
* ``data`` — program sources, the built-in generator, decontamination, the Parquet trace dataset
  and its task rows;
* ``rewards`` — the response format, step rewards and the sandbox-verified final reward;
* ``training`` — SFT and Bi-Level GRPO on TRL, their settings, checkpoints and curves;
* ``evaluation`` — CRUXEval, LiveCodeBench execution and REval, each scored as its own harness
  scores it, and the step-vs-final gap.

Shared at the top: ``models`` (the embedded base model and the rollout engines), ``paths``,
``parallel`` and ``cli`` (the ``stepcode`` command's parser). Untrusted code runs only through
:mod:`sandbox`; :mod:`pipelines` wraps all of this in Dagster assets.
"""
