"""Boot a desktop ISO and prove its graphical session started, with a screenshot.

The serial console stays the test's way in: log in there, then ask the
system (not the screen) whether the display manager runs and whether the live
user's desktop session is up (loginctl shows a graphical session of the user;
the session's main process is running). Only then the screen is dumped to
PNG, polled until it looks like a desktop: many colours (a VGA text console
shows a handful) and no single colour covering most of it (an X screen that is
still black but shows a notification popup has many colours, yet is ~95% black).
The PNG is kept as the test's artifact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from deblive.boottest.run import boot_vm_spec
from deblive.boottest.shell import LOGIN_PROMPT, SerialShell, login
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host.hostapt import host_architecture
from deblive.model.arch import Arch
from deblive.vm import screen
from deblive.vm.accel import AccelRequest, AccelSelector
from deblive.vm.errors import QemuError
from deblive.vm.machine import Machine, vm_workdir

# Session processes of Debian's desktop tasks (what `pgrep -u user -x NAME` finds).
SESSION_PROCESSES = (
    "xfce4-session", "gnome-shell", "plasmashell", "lxqt-session", "mate-session",
    "cinnamon-session", "cinnamon", "lxsession",
)
DISPLAY_MANAGERS = ("lightdm", "gdm3", "sddm")
MAX_BACKGROUND_SHARE = 0.85  # a black screen with a notification popup is ~95% black
TEXT_CONSOLE_COLOURS = 12  # VGA text mode has 16 colours, boot messages use < 8; capped count


@dataclass
class SessionResult:
    ok: bool
    accel: str
    seconds_to_session: float | None
    display_manager: str | None
    session_process: str | None
    screenshot: Path | None
    colours: int = 0
    background_share: float = 1.0  # the commonest colour's share of the pixels
    seconds_to_picture: float | None = None
    serial_log: Path | None = None
    failures: list[str] = field(default_factory=list)


def boot_desktop(
    iso: Path, out_dir: Path, *, user: str = "user", password: str = "live",
    accel: str = "auto", login_timeout: float = 900.0, session_timeout: float = 600.0,
    draw_timeout: float = 600.0, memory_mib: int = 3072,
) -> SessionResult:
    """Boot iso (BIOS, CD), wait for the desktop session, screenshot it."""
    runner = Runner(BuildLog())
    selector = AccelSelector(AccelRequest(accel), runner, host_architecture())
    decision = selector.get()
    out_dir.mkdir(parents=True, exist_ok=True)
    serial_log = out_dir / "serial-desktop.log"
    shot = out_dir / "screen-desktop.png"
    result = SessionResult(False, str(decision.accel), None, None, None, None,
                           serial_log=serial_log)
    with vm_workdir() as work:
        spec = boot_vm_spec(iso, "bios", "cd", decision, Arch.AMD64, work,
                            memory_mib=memory_mib, smp=2, name="deblive-desktop")
        with Machine(spec, runner, serial_log, work) as vm:
            try:
                vm.expect(LOGIN_PROMPT, login_timeout, None, "login prompt")
                login(vm, user, password, 120.0)
                shell = SerialShell(vm)
                shell.prepare()
                shell.run("sudo -n dmesg -n 1")
                result.display_manager = _first_running(shell, DISPLAY_MANAGERS, None)
                deadline = time.monotonic() + session_timeout
                while result.session_process is None and time.monotonic() < deadline:
                    result.session_process = _first_running(shell, SESSION_PROCESSES, user)
                    if result.session_process is None:
                        time.sleep(5)
                result.seconds_to_session = round(vm.elapsed, 1)
                if result.session_process is None:
                    result.failures.append(
                        f"no desktop session process of {user} within {session_timeout:.0f} s "
                        f"(display manager: {result.display_manager or 'none'})"
                    )
                # The session process starts long before the desktop is drawn (under
                # TCG the X screen stays black for a minute or more): poll the screen.
                deadline = time.monotonic() + draw_timeout
                while True:
                    result.colours, result.background_share = screen_stats(vm, shot)
                    result.screenshot = shot
                    if looks_like_desktop(result.colours, result.background_share):
                        break
                    if time.monotonic() > deadline:
                        break
                    time.sleep(10)
                result.seconds_to_picture = round(vm.elapsed, 1)
                if not looks_like_desktop(result.colours, result.background_share):
                    result.failures.append(
                        f"after {draw_timeout:.0f} s the screen has {result.colours} colours "
                        f"and one colour covers {result.background_share:.0%} of it: "
                        "blank or the text console, not a desktop"
                    )
                vm.send("sudo -n poweroff\r")
                if not vm.wait_exit(90):
                    # live-boot asks to remove the medium and press ENTER on the console.
                    vm.send("\r")
                    vm.wait_exit(60)
            except QemuError as exc:
                result.failures.append(f"{exc}; last lines: " + " | ".join(vm.tail(8)))
            finally:
                vm.quit()
    result.ok = not result.failures
    return result


def screen_stats(vm: Machine, dest: Path) -> tuple[int, float]:
    """Dump the screen to dest (PNG); its colour count (capped) and the commonest
    colour's share of all pixels.

    The share tells a drawn desktop (wallpaper, panel) from a black X screen
    with only a notification on it, which already has many colours.
    """
    width, height, pixels = vm.screendump()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(screen.encode_png(width, height, pixels))
    return screen.pixel_stats(pixels)


def looks_like_desktop(colours: int, background_share: float) -> bool:
    """Many colours and no single colour filling most of the screen."""
    return colours >= TEXT_CONSOLE_COLOURS and background_share < MAX_BACKGROUND_SHARE


def _first_running(shell: SerialShell, names: tuple[str, ...], user: str | None) -> str | None:
    owner = f"-u {user} " if user else ""
    for name in names:
        if shell.run(f"pgrep {owner}-x {name} >/dev/null").rc == 0:
            return name
    return None
