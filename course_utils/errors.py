"""The course's own errors: a learner's mistake or a missing prerequisite, never a bug.

The command line prints a :class:`CourseError` (and ``ValueError``, ``FileNotFoundError``, ``PermissionError``
raised by the course's checks) as one line, ``error: <message>``, and exits non-zero; so its message must say
what is wrong and name the fix.
"""

from __future__ import annotations


class CourseError(Exception):
    """Something the learner can fix; the message names the fix."""
