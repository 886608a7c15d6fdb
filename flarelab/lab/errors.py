"""The lab's errors: it cannot run here, a command that builds it failed, a program in it failed."""

from __future__ import annotations

from ..errors import FlarelabError

__all__ = ["LabError", "LabProcessError", "LabSetupError", "LabUnavailableError"]


class LabError(FlarelabError):
    """Something went wrong with the real NAT lab (not with a peer)."""


class LabUnavailableError(LabError):
    """The lab cannot run on this machine (not root, a tool missing); the message says why."""


class LabSetupError(LabError):
    """A command that builds or tears down the lab failed."""

    def __init__(self, message: str, *, command: str = "", returncode: int | None = None,
                 stderr: str = "") -> None:
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"{message}{detail}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class LabProcessError(LabError):
    """A function run in the lab raised, timed out, or its process died.

    ``error_type`` and ``remote_traceback`` come from the lab process when it could report
    them; ``stderr`` is the end of what it wrote there.
    """

    def __init__(self, message: str, *, host: str, function: str, error_type: str = "",
                 remote_traceback: str = "", stderr: str = "") -> None:
        super().__init__(f"{function} on {host}: {message}")
        self.host = host
        self.function = function
        self.error_type = error_type
        self.remote_traceback = remote_traceback
        self.stderr = stderr
