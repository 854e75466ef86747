"""The stage protocol: one step of the build, which owns its own teardown.

A stage does one thing (bootstrap, install packages, squash...) in run(ctx).
Whatever it changes only for the build's sake (a mount, a service block, the
build mirror's sources) it registers on the context's exit stacks in the same
breath, as vmdb2's steps own their teardown: ctx.session for the chroot
session, ctx.teardown for the whole build. So a failure anywhere undoes
exactly what was done, deepest first, and the pipeline is a plain list.
"""

from __future__ import annotations

from typing import ClassVar

from deblive.build.context import BuildContext


class Stage:
    """One named step; the pipeline runs it inside a logged, timed stage."""

    name: ClassVar[str]

    def wanted(self, ctx: BuildContext) -> bool:
        """Whether this build runs the stage (ISO stages: not with --no-iso)."""
        return True

    def run(self, ctx: BuildContext) -> None:
        raise NotImplementedError
