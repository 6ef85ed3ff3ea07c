"""A compact console logger for runs started from a terminal (``stepcode demo``, ``stepcode
ablation``): one line per message, ``HH:MM:SS asset: message``, without the run id and the
framework's fields. The event log the UI shows is unchanged; errors keep their traceback."""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg

_META = "dagster_meta"


class CompactFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, _META, None) or {}
        source = (meta.get("step_key") or meta.get("job_name") or "dagster").replace("__", ".")
        message = meta.get("orig_message", record.getMessage())
        event = meta.get("dagster_event")
        data = getattr(event, "event_specific_data", None) if event is not None else None
        error = getattr(data, "error", None)
        if error is not None:
            message += "\n" + getattr(data, "error_display_string", error.to_string())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {source}: {message}"


@dg.logger(config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
           description="one line per message: time, asset, message")
def compact_console(init_context) -> logging.Logger:
    logger = logging.getLogger(f"stepcode.console.{id(init_context)}")
    logger.setLevel(init_context.logger_config["log_level"])
    logger.propagate = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CompactFormatter())
    logger.handlers = [handler]
    return logger


COMPACT_LOGGING = {"loggers": {"compact_console": {"config": {"log_level": "INFO"}}}}
