"""`deblive plan` as people read it: sizes per part of the image, and what goes on the
medium without being installed (the installer, the boot loaders)."""

from __future__ import annotations

from deblive.apt.plan import Plan, human


def format_plan(plan: Plan) -> str:
    lines = [
        f"{plan.name}: {plan.codename} {plan.architecture}",
        f"  base ({plan.variant}): {plan.base.count} packages, "
        f"download {human(plan.base.download_bytes)}, "
        f"installed {human(plan.base.installed_bytes)}",
        f"  live system, tasks, extras: {plan.added.count} packages, "
        f"download {human(plan.added.download_bytes)}, "
        f"installed {human(plan.added.installed_bytes)}",
        f"  image: {plan.count} packages, download {human(plan.download_bytes)}, "
        f"installed {human(plan.installed_bytes)}",
    ]
    if plan.installer_package:
        lines.append(f"  installer package (on the medium, not installed): "
                     f"{plan.installer_package}")
    if plan.boot:
        lines.append(f"  boot loaders for {plan.architecture} (on the medium, not installed): "
                     + ", ".join(plan.boot))
    return "\n".join(lines)
