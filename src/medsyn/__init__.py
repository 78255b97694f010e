"""medsyn: measure whether class-conditional GAN images help a small medical image classifier.

Progress lines (classifier and audit-encoder epochs, the audit's steps) go to the `medsyn` logger at INFO, through
one handler, `show_progress`: the `medsyn` command and every study job install it. It writes to sys.stdout as it
is at each line, so a command shows them in the terminal and a study job, which points stdout at
RUN/logs/<job>.log, writes them there.
"""

import logging
import sys

__version__ = "0.1.0"


class _Stdout(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # logging's rule: a failed line is reported on stderr, never raised
            self.handleError(record)


def show_progress() -> None:
    """Print medsyn's progress lines (the `medsyn` logger, INFO and up) to sys.stdout; calling it again is a no-op."""
    logger = logging.getLogger("medsyn")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _Stdout) for handler in logger.handlers):
        logger.addHandler(_Stdout())
