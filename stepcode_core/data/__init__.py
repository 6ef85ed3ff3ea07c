"""Data: the programs StepCode learns from and the dataset built from their traces. ``sources``
reads programs with an input each (the seeded ``generator``, HumanEval, JSONL/Parquet files, folders
of scripts, Hugging Face datasets); ``decontaminate`` finds programs that overlap an evaluation set
by 10-grams of Python tokens; ``dataset`` filters traced programs (failures, nondeterminism, anchor
bounds, contamination), splits them stably and writes the task rows whose prompts ``tasks`` words;
``schemas`` holds the explicit pyarrow schemas of every Parquet file.
"""
