"""Log output of every process: text (the default) or one JSON object a line (``CRAWLJOBS_LOG_FORMAT=json``).

A JSON line carries ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the record's ``extra`` fields
(``action``, ``job_id``, ``batch_id``, ``delivery_id``...), the fields the process tagged all its lines with
(a worker's ``worker`` id) and ``exception`` when there is one. Records about a job carry ``job_id`` and, when it
has one, ``batch_id`` (`job_fields`).

The API and ``crawljobs up`` pass `uvicorn_log_config` to uvicorn; the sweeper calls `configure_logging`; the
worker's Scrapy settings (``crawlproject.settings``) turn Scrapy's own handler off and call `configure_logging`.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from crawljobs.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's colored copy of the message
    "spider",  # Scrapy passes its spider and crawler objects with many records
    "crawler",
    "taskName",
}
# Fields added to every JSON line of this process (`tag_logs`).
_TAGS: dict[str, str] = {}


def job_fields(job_id: uuid.UUID | str | None, batch_id: str | None = None) -> dict[str, str]:
    """The ``extra`` of a log record about a job: its id, and its batch's id when it has one."""
    fields: dict[str, str] = {}
    if job_id is not None:
        fields["job_id"] = str(job_id)
    if batch_id is not None:
        fields["batch_id"] = batch_id
    return fields


def tag_logs(**fields: str) -> None:
    """Add fields to every JSON log line this process writes from now on (say, a worker's id)."""
    _TAGS.update(fields)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_TAGS)
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                line[name] = _plain(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, *, level: int = logging.INFO) -> None:
    """One handler on the root logger, writing to stderr in the configured format (replacing any other)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings))
    handler.setLevel(level)  # Scrapy puts the root logger back to NOTSET
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging configuration in the configured format, with the root logger (our own records)
    written too, at INFO."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if settings.log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "crawljobs.logs.JsonFormatter"}
    config["formatters"]["crawljobs"] = (
        {"()": "crawljobs.logs.JsonFormatter"} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    )
    config["handlers"]["crawljobs"] = {
        "class": "logging.StreamHandler",
        "formatter": "crawljobs",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["crawljobs"], "level": "INFO"}
    return config
