"""``python -m stepcode_core.training sft|grpo ...`` is ``stepcode train sft|grpo ...`` (for
``accelerate launch -m``)."""

import sys

from stepcode_core.cli import main

raise SystemExit(main(["train", *sys.argv[1:]], prog="python -m stepcode_core.training"))
