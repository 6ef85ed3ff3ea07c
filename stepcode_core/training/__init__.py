"""Training: a supervised warm start, then Bi-Level GRPO, on TRL. ``settings`` holds the flat
settings and the presets (``cpu-smoke``, ``paper``); ``tasks`` loads task rows from a trace dataset;
``modeling`` loads, freezes, adapts (LoRA) and saves models; ``sft`` and ``grpo`` run the two
phases, ``phases`` either by name; ``advantages`` holds the Bi-Level advantage estimators as small pure functions and
``trainer`` the TRL subclass that hands per-token advantages to TRL's loss; ``held_out`` scores a
checkpoint on validation tasks, ``curves`` plots a run, ``tiny_task`` is a small trace task for
learning tests and benchmarks; ``cli`` is ``stepcode train``. torch, transformers and TRL come with
the ``train`` extra and are imported where they are used.
"""
