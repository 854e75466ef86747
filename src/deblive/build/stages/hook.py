"""Step 6: the one customisation hook (seed points 5 and 6).

The hook is a script on the host, given the image's root directory as its
only argument. It runs while the chroot's mounts, the service block and the
build mirror's sources are still in place, so `chroot "$1" apt-get install ...`
works from it. Documented variables describe the build, and DEBLIVE_LIB names
a shell function library it can source, whose functions work inside the image.

The hook is trusted (it runs as root on the host, by design: the config's
author wrote it); what it leaves in the tree is not, and every later stage
reads the tree through the image tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from deblive.build.context import BuildContext
from deblive.build.stage import Stage


def library_path() -> Path:
    """The hook function library shipped with deblive (a real file on disk)."""
    return Path(str(resources.files("deblive").joinpath("data/hooklib.sh")))


def hook_env(ctx: BuildContext) -> dict[str, str]:
    config = ctx.config
    assert config.mirror and config.apt_mirror
    return {
        "DEBLIVE_ROOT": str(ctx.rootfs),
        "DEBLIVE_NAME": config.name,
        "DEBLIVE_SUITE": config.codename,
        "DEBLIVE_SUITE_REQUESTED": config.suite,
        "DEBLIVE_ARCH": str(config.architecture),
        "DEBLIVE_MIRROR": config.mirror,
        "DEBLIVE_APT_MIRROR": config.apt_mirror,
        "DEBLIVE_USER": config.user.name,
        "DEBLIVE_HOSTNAME": config.hostname,
        "DEBLIVE_CONFIG_DIR": str(config.base_dir),
        "DEBLIVE_BUILD_ID": ctx.build_id,
        "DEBLIVE_LIB": str(library_path()),
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
    }


class Hook(Stage):
    name = "hook"

    def run(self, ctx: BuildContext) -> None:
        hook = ctx.config.hook_path
        if hook is None:
            ctx.log.info("no customisation hook configured")
            return
        ctx.runner.run(
            [str(hook), str(ctx.rootfs)],
            env=hook_env(ctx),
            cwd=ctx.config.base_dir,
            what=f"customisation hook {hook}",
        )

