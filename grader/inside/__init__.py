"""The grader's code that runs INSIDE the sandbox (untrusted side): ``runner``, ``confine``,
``harness``, and ``wire`` (the frames, which the trusted side parses strictly).

This folder and ``grader/__init__.py`` are the only parts of the grader a sandbox sees (read-only):
nothing here may hold or import a secret (hidden checks, grades, submissions).
"""
