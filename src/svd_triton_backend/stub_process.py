"""Set-up of the stub process every model of this repository runs in: text files in UTF-8, engine logs to Triton's."""

from __future__ import annotations

import locale
import logging

import triton_python_backend_utils as pb_utils


def prepare() -> None:
    """Once per stub process, at the start of initialize()."""
    utf8_text_files()
    forward_engine_logs()


def utf8_text_files() -> None:
    """Make open() read UTF-8 in this process, whatever LANG says.

    The stub embeds Python with an isolated configuration, which never sets the locale from the
    environment: open() without an encoding reads ASCII, and torch.compile's inductor then fails
    the model load on its own UTF-8 templates ("'ascii' codec can't decode byte 0xe2").
    """
    if locale.getpreferredencoding(False).upper().replace("-", "") != "UTF8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


class TritonLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        write = (
            pb_utils.Logger.log_error
            if record.levelno >= logging.ERROR
            else pb_utils.Logger.log_warn
            if record.levelno >= logging.WARNING
            else pb_utils.Logger.log_info
        )
        write(f"{record.name}: {record.getMessage()}")


def forward_engine_logs() -> None:
    """Send svd_engine's log records (weight download progress, compile times) to Triton's log (once per stub
    process)."""
    engine_log = logging.getLogger("svd_engine")
    engine_log.addHandler(TritonLogHandler())
    engine_log.setLevel(logging.INFO)
