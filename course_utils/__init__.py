"""course_utils: the single source of helper code for the InternVL2 hands-on course.

Every notebook imports from here; every function here has a test under ``tests/``.
"""

__version__ = "0.1.0"
