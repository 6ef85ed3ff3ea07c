"""Evaluation: each benchmark scored the way its own harness scores it, so that numbers compare with
published ones. ``cruxeval`` checks generations with ``check_runtime`` (the official check, one
sandbox item each) and computes pass@k, for CRUXEval and LiveCodeBench execution rows; ``reval``
builds REval's prompts and scores its four question kinds and Incremental Consistency, ground truth
from ``reval_tracer`` in the sandbox; ``execution`` prompts a model in three styles and extracts its
answers; ``trace_gap`` measures step accuracy against final accuracy; ``cli`` is ``stepcode score``.
"""
