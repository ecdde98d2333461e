"""Library-level workflows: what a ``litomo`` command computes and writes, callable from Python.

The CLI parses options, calls one of these and prints; each workflow writes its output folder
through :class:`litomo.io.rundir.RunDir`.
"""
