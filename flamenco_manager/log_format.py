"""The manager's log lines: one per record, structured, secrets masked.

Every process of a manager sets them up the same way: ``serve``'s own, and each of the processes
``serve --processes N`` starts (see :func:`flamenco_manager.web.app.app_from_environment`).
"""

from __future__ import annotations

import json
import logging
import warnings
from datetime import UTC, datetime
from typing import Final

__all__ = ["StructuredFormatter", "configure_logging"]

# Attributes every log record has; anything else was passed in `extra` and is printed as a field.
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
_SECRET_WORDS: Final = ("secret", "password", "token", "authorization")


class StructuredFormatter(logging.Formatter):
    """One line per record: time, level, logger, message, then ``key=value`` fields.

    Fields whose name mentions a secret are masked, so a secret never reaches the log.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, and its exception's traceback on the lines after it."""
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        parts = [
            moment,
            record.levelname.lower(),
            str(record.name),
            json.dumps(record.getMessage()),
        ]
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            shown = "***" if any(word in key.lower() for word in _SECRET_WORDS) else value
            parts.append(f"{key}={json.dumps(shown, default=str)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str) -> None:
    """Structured logs on standard error, Python's warnings among them."""
    handler = logging.StreamHandler()
    handler.setFormatter(StructuredFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    # PyJWT's warning of a short key (2.11 and later), at the first registration, repeats what
    # serve says at start about the registration secret.
    warnings.filterwarnings("ignore", message=r"The HMAC key is \d+ bytes long")
