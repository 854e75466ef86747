"""The stage protocol: one step of the build, which owns its own teardown.

A stage does one thing (bootstrap, install packages, squash...) in run(ctx).
Whatever it changes only for the build's sake (a mount, a service block, the
build mirror's sources) it registers on the context's exit stacks in the same
breath, as vmdb2's steps own their teardown: ctx.session for the chroot
session, ctx.teardown for the whole build. So a failure anywhere undoes
exactly what was done, deepest first, and the pipeline is a plain list.

What must hold before a stage may start (free space for the squashfs or the
ISO) is its check(ctx), which the pipeline runs before the stage's start line:
a refusal names the shortage and leaves no started, half-written stage behind.
"""

from __future__ import annotations

from typing import ClassVar

from deblive.build.context import BuildContext


class Stage:
    """One named step; the pipeline runs it inside a logged, timed stage."""

    name: ClassVar[str]
    # Part of the base tree: skipped when a layered build's base comes from the cache.
    in_base: ClassVar[bool] = False

    def wanted(self, ctx: BuildContext) -> bool:
        """Whether this build runs the stage (ISO stages: not with --no-iso)."""
        return True

    def check(self, ctx: BuildContext) -> None:
        """Refuse before the stage starts if it cannot succeed (DiskSpaceError)."""

    def run(self, ctx: BuildContext) -> None:
        raise NotImplementedError
