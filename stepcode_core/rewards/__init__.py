"""Rewards: how a model's response is read and scored. ``responses`` parses the format — free text,
each predicted state as ``<state>NAME: value</state>`` in execution order, the answer in
``<answer>...</answer>`` — and never raises; ``steps`` compares predicted states with the true ones
(r_i = 1 when equal, as literals or as text); ``verify`` adds the final reward, verified by
execution in the sandbox: the CRUXEval assertion for output prediction, the predicted input traced
for input prediction. Training and evaluation share all three.
"""
