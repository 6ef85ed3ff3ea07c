"""Tracing: rewrite a program P into P' whose anchors report its intermediate states, and run P' in
the sandbox for the ground truth. ``anchors`` inserts the anchors with ``ast`` (one after each
significant assignment, one before each return, none inside loops, at most ten executed lines);
``runner`` sends programs to the sandbox as items of one batch whose prelude is ``runtime`` (the
in-sandbox code that records each anchor's ``repr`` behind a per-run nonce) and parses what they
print into steps; ``cli`` is ``stepcode instrument``.
"""
