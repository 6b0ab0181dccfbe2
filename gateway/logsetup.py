"""structlog set-up for the daemon and the CLI: JSON lines for journald, readable on a terminal.

Owns where every log line goes and how it looks, including what libraries log through the
standard `logging` module (paho, aiomqtt, pymodbus, and asyncio's reports of exceptions raised in
callbacks, e.g. a paho callback after a broker kill): those records go through the same
renderer, so a JSON log holds nothing but JSON lines (issue 10), a traceback as the `exception`
field of its event. Every line's `timestamp` is ISO 8601 with the site's UTC offset (the same
time the events carry), so a log line and an event can be matched by eye.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, tzinfo

import structlog


def site_timestamper(tz: tzinfo | None) -> structlog.typing.Processor:
    """Adds `timestamp`: now in `tz` (None: the box's own zone), with its offset."""

    def stamp(
        _logger: object, _name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event["timestamp"] = datetime.now(tz).astimezone(tz).isoformat(timespec="milliseconds")
        return event

    return stamp


def configure(*, fmt: str = "auto", level: str = "info", tz: tzinfo | None = None) -> None:
    """`tz`: the site's time zone (`[site] timezone`); None before a config is read."""
    renderer: structlog.typing.Processor
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if json_lines:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    # The console renderer prints tracebacks itself; JSON carries them as a string field.
    exceptions: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info] if json_lines else []
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        site_timestamper(tz),
    ]
    structlog.configure(
        processors=[*shared, *exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # paho and pymodbus log through the standard library. pymodbus logs every timeout at ERROR
    # with a frame dump; our line logs each failure once per state change instead.
    root.setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
