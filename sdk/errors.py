"""The one exception hierarchy of robota.

Every error a user can cause derives from `RobotaError`, so the CLI can print it as one line
and exit non-zero, and library callers can catch robota's errors without catching bugs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobotaError(Exception):
    """Base class of every error robota raises on bad input or a failed check."""


class UnknownNameError(RobotaError, KeyError):
    """A task, policy, feature or config key that no registry holds."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(self._message())

    def _message(self) -> str:
        close = difflib.get_close_matches(self.name, self.choices, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {self.name!r}.{hint} Valid names: {', '.join(self.choices)}."

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message.
        return self._message()


class DatasetError(RobotaError):
    """A dataset folder that is missing, incomplete or inconsistent."""


class CheckpointError(RobotaError):
    """A checkpoint folder that is missing files, corrupted or inconsistent with its statistics."""


class BundleError(RobotaError):
    """A bundle that is missing files, fails its hash or signature check, or has a bad manifest."""


class ParityError(RobotaError):
    """An exported model whose outputs differ from the source model by more than the tolerance."""


class SpecError(RobotaError):
    """Observations, actions or statistics that do not match the feature spec."""


class MissingExtraError(RobotaError, ImportError):
    """An optional dependency that the requested feature needs is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed, but this feature needs it. "
            f"Install it with: pip install 'robota[{extra}]'"
        )


def check_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """Return `name` if it is one of `choices`, else raise `UnknownNameError` with a suggestion."""
    choices = list(choices)
    if name not in choices:
        raise UnknownNameError(kind, name, choices)
    return name
