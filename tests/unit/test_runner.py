from __future__ import annotations

import io
from pathlib import Path

import pytest

from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import CommandError, Runner


def make(tmp_path: Path) -> tuple[Runner, BuildLog]:
    log = BuildLog()
    log.open(tmp_path / "build.log")
    return Runner(log), log


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    runner, log = make(tmp_path)
    with log.stage("demo"):
        result = runner.run(["sh", "-c", "echo one; echo two >&2"], capture=True)
    log.close()
    assert result.returncode == 0
    assert result.output == "one\ntwo\n"
    text = (tmp_path / "build.log").read_text()
    assert "[demo] $ sh -c" in text
    assert "[demo] | one" in text and "[demo] | two" in text
    assert "stage demo: done" in text
    assert log.timings[0].name == "demo" and log.timings[0].ok


def test_failure_reports_command_status_tail_and_log(tmp_path: Path) -> None:
    runner, _ = make(tmp_path)
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i; done; exit 3"],
                   what="counting")
    err = info.value
    assert err.returncode == 3
    message = str(err)
    assert message.startswith("counting: command failed with exit status 3: sh -c")
    assert "line40" in message and "line10" not in message  # only the tail
    assert f"full log: {tmp_path / 'build.log'}" in message


def test_missing_command_is_127(tmp_path: Path) -> None:
    runner, _ = make(tmp_path)
    with pytest.raises(CommandError) as info:
        runner.run(["deblive-no-such-command"])
    assert info.value.returncode == 127
    assert "command not found" in str(info.value)


def test_signal_is_named(tmp_path: Path) -> None:
    runner, _ = make(tmp_path)
    with pytest.raises(CommandError, match="killed by signal SIGKILL"):
        runner.run(["sh", "-c", "kill -9 $$"])


def test_clean_environment_and_input(tmp_path: Path) -> None:
    runner, _ = make(tmp_path)
    out = runner.output(["/usr/bin/env"], env={"ONLY": "1"}, inherit_env=False)
    assert out.strip() == "ONLY=1"
    assert runner.output(["cat"], input_data="fed\n") == "fed\n"


def test_failed_stage_is_recorded(tmp_path: Path) -> None:
    _, log = make(tmp_path)
    with pytest.raises(RuntimeError), log.stage("broken"):
        raise RuntimeError("x")
    assert log.timings[-1].name == "broken" and not log.timings[-1].ok


def test_format_seconds() -> None:
    assert format_seconds(3.21) == "3.2 s"
    assert format_seconds(125) == "2 min 05 s"


def test_standard_error_kept_apart_for_parsers(tmp_path: Path) -> None:
    runner, _ = make(tmp_path)
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture=True,
                        check=False, stderr="capture")
    assert result.returncode == 3
    assert result.output == "out\n" and result.errors == "err\n"


def test_input_is_never_logged(tmp_path: Path) -> None:
    runner, log = make(tmp_path)
    runner.run(["sh", "-c", "cat > /dev/null"], input_data="user:s3cret\n")
    log.close()
    assert "s3cret" not in (tmp_path / "build.log").read_text()


def test_spawned_process_is_a_child_the_runner_can_end(tmp_path: Path) -> None:
    runner, log = make(tmp_path)
    with runner.spawn(["sh", "-c", "echo started; exec sleep 60"]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        assert proc.pid in runner.running()
        runner.terminate_children(grace=1.0)
        assert proc.wait(5) is not None
    assert runner.running() == []
    log.close()
    assert "$ sh -c 'echo started; exec sleep 60'" in (tmp_path / "build.log").read_text()


def test_markup_in_messages_is_printed_as_text() -> None:
    log = BuildLog()
    log.console.file = io.StringIO()
    log.info("guest said [/x] and [bold]")
    log.warn("[/]")
    assert "[/x] and [bold]" in log.console.file.getvalue()
