"""The scheduling files in batch/schedule/: 02:00 nightly, each running `-m batch run`."""

from __future__ import annotations

import configparser
from pathlib import Path

SCHEDULE = Path(__file__).resolve().parents[1] / "batch" / "schedule"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(SCHEDULE / name)
    return parser


def test_crontab_runs_the_job_at_two():
    lines = [
        line
        for line in (SCHEDULE / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert fields[:5] == ["0", "2", "*", "*", "*"]
    assert "-m batch run" in fields[5]


def test_systemd_service_and_timer_pair():
    service, timer = _unit("fashion-batch.service"), _unit("fashion-batch.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith("python -m batch run")
    assert service["Service"]["SuccessExitStatus"] == "1"
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:00:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_windows_task_scheduler_command():
    create = (SCHEDULE / "schtasks_create.cmd").read_text()
    (line,) = [x for x in create.splitlines() if x.startswith("schtasks ")]
    for part in (
        "/Create",
        '/TN "FashionNightlyBatch"',
        "/SC DAILY",
        "/ST 02:00",
        r'/TR "C:\fashion\batch\schedule\run_batch.cmd"',
    ):
        assert part in line
    assert r".venv\Scripts\python.exe -m batch run" in (SCHEDULE / "run_batch.cmd").read_text()
