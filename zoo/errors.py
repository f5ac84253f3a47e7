"""Errors that the command line turns into a one-line message and exit status 2."""

from __future__ import annotations


class ZooError(Exception):
    """Bad input: a clear, one-line message that names the value and what to do.

    The CLI prints ``error: <message>`` and exits with status 2, never a traceback.
    """


class DataProblems(ZooError):
    """Every problem found in a data set, reported at once (one line per problem)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = len(self.problems) - 50
        if more > 0:
            shown += f"\n  - … and {more} more"
        super().__init__(
            f"{len(self.problems)} problem(s) in data set {source}; fix them and run again:\n{shown}"
        )


def close_matches(name: str, choices: list[str]) -> str:
    """A ' Did you mean …?' suffix listing close matches, or the full list."""
    import difflib

    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if near:
        return f" Did you mean {', '.join(near)}?"
    return f" Known: {', '.join(sorted(choices))}."


# errno values of a disk that has no room left: ENOSPC (device full) and EDQUOT (quota)
DISK_FULL = (28, 122)


def describe_os_error(exc: OSError) -> str:
    """What an :class:`OSError` means for the user, in one sentence naming the file."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in DISK_FULL:
        return (
            f"the disk is full (no space left on device){where}; free some space and run the "
            "command again (nothing half-written was kept)."
        )
    return f"{exc.strerror or exc}{where}."
