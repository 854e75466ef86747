"""Extended tier: an image without serial console boots too: the VGA path, checked
through the screen.

The image has `serial_console: false`, so neither boot loader nor the
kernel talk to the serial port. The test takes screenshots of the boot menu
(which must not be blank), then logs in on the VGA console by typing on the
virtual keyboard, and has the live system write a marker to the serial port
itself: proof that the system booted, the user can log in and sudo works.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from deblive.boottest.run import boot_vm_spec
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.arch import Arch
from deblive.vm import screen
from deblive.vm.accel import AccelDecision
from deblive.vm.command import Accel
from deblive.vm.console import clean_serial
from deblive.vm.errors import QemuError
from deblive.vm.machine import Machine, vm_workdir
from tests.extended.test_flavours_extended import artifacts
from tests.integration.conftest import build

pytestmark = pytest.mark.extended

MARKER = "DEBLIVE-VGA-LOGIN-OK"


@pytest.fixture(scope="module")
def vga_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image that talks to the screen only; sudo asks alice for her password."""
    base = tmp_path_factory.mktemp("vga")
    config = base / "vga.yaml"
    config.write_text(textwrap.dedent("""\
        name: vgatest
        user: {name: alice, password: alicepw731, groups: [sudo], sudo: password}
        squashfs: {compression: lz4}
        boot: {serial_console: false, title: deblive VGA test}
        """))
    result = build(config, base)
    assert result.returncode == 0, result.output[-4000:]
    return result.iso


def screendump(vm: Machine, dest: Path) -> tuple[int, int]:
    """Save the screen as PNG; returns its width and number of colours."""
    width, height, pixels = vm.screendump()
    dest.write_bytes(screen.encode_png(width, height, pixels))
    return width, screen.count_colours(pixels)


def test_menu_and_console_login_without_serial(
    vga_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = artifacts(tmp_path_factory, "vga")
    with vm_workdir() as workdir:
        spec = boot_vm_spec(vga_iso, "uefi", "cd", AccelDecision(Accel.TCG, "test"),
                            Arch.AMD64, workdir)
        with Machine(spec, Runner(BuildLog()), out / "serial.log", workdir) as vm:
            # The grub menu: its 640x480 graphics mode (the firmware's screen is
            # larger), a splash background and menu text, so many colours.
            width, colours = 0, 0
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (width == 640 and colours > 2):
                time.sleep(2)
                try:
                    width, colours = screendump(vm, out / "menu.png")
                except QemuError:
                    continue
            assert width == 640 and colours > 2, "no boot menu on the screen"
            serial = (out / "serial.log").read_text(errors="replace")
            assert "GNU GRUB" not in serial, "serial_console: false, yet grub used the serial port"
            # Log in on tty1 and let the system itself report over ttyS0.
            command = f"echo alicepw731 | sudo -S sh -c 'echo {MARKER} > /dev/ttyS0'\n"
            for attempt in range(4):
                time.sleep(60 if attempt == 0 else 30)
                screendump(vm, out / f"console-{attempt}.png")
                vm.type_text("alice\n")
                time.sleep(3)
                vm.type_text("alicepw731\n")
                time.sleep(8)
                vm.type_text(command)
                try:
                    vm.expect(MARKER, timeout=20)
                    break
                except QemuError:
                    continue
            else:
                pytest.fail(f"no login on the VGA console; screenshots in {out}")
            screendump(vm, out / "logged-in.png")
            assert "login:" not in clean_serial((out / "serial.log").read_text())
