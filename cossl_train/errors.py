"""Expected failures: bad input rather than bugs.

Every error a user can cause (a config key, a data path, a checkpoint, a diverging run) is a
:class:`CosslError`; the command-line tools print its one-line message and exit with status 2.
Anything else -- a bare ``ValueError`` from a bug included -- keeps its traceback.
"""

from __future__ import annotations


class CosslError(Exception):
    """An expected failure caused by the input; the message is one line."""


class ConfigError(CosslError, ValueError):
    """A config file or override that cannot be used."""


class CheckpointError(CosslError, ValueError):
    """A checkpoint that cannot be used here."""


class BackboneError(CosslError, ValueError):
    """A backbone or model spec that cannot be built or cannot give a feature map."""


class DataError(CosslError, ValueError):
    """Data that cannot be used as configured (missing folder, unlabelled images, empty split...)."""


class NonFiniteLossError(CosslError, RuntimeError):
    """The loss became NaN or infinite; raised before any checkpoint is written."""


class RunExistsError(CosslError, RuntimeError):
    """The output folder already holds a checkpoint and --resume was not given."""


class InputError(CosslError, ValueError):
    """Tensors or arguments given to a public part (a loss, a head, a backbone wrapper) that do not
    have the shape or value it needs; the message names what was given and what is expected."""


#: what the command-line tools report as one line: expected errors and missing files
USER_ERRORS: tuple[type[BaseException], ...] = (CosslError, FileNotFoundError)


def report(prog: str, err: BaseException) -> int:
    """Print ``err`` as the one line ``prog: error: message`` on stderr and return exit status 2.

    With ``COSSL_DEBUG=1`` in the environment the error is raised again, traceback and all.
    """
    import os
    import sys

    if os.environ.get("COSSL_DEBUG"):
        raise err
    text = str(err).strip()
    print(f"{prog}: error: {text.splitlines()[0] if text else type(err).__name__}", file=sys.stderr)
    return 2
