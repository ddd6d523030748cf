"""edgemed._threads: usable CPUs from affinity and cgroup quotas, free CPUs, override precedence (no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed import _threads
from edgemed.errors import ConfigError


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    _write(tmp_path / "proc_cgroup", "0::/job.slice\n")
    _write(tmp_path / "cg" / "job.slice" / "cpu.max", "150000 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == pytest.approx(1.5)


def test_cgroup_v2_unlimited_and_root_fallback(tmp_path: Path) -> None:
    _write(tmp_path / "proc_cgroup", "0::/\n")
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") is None
    _write(tmp_path / "proc_cgroup", "0::/gone\n")  # own folder missing: the container's root is read
    _write(tmp_path / "cg" / "cpu.max", "200000 100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == pytest.approx(2.0)


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    _write(tmp_path / "proc_cgroup", "3:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert _threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == pytest.approx(3.0)
    _write(tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert _threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") is None


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert _threads.cgroup_cpu_limit(tmp_path / "none", tmp_path / "none_either") is None


def test_usable_cpus_caps_affinity_by_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_affinity_cpus", lambda: 8)
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: 2.5)
    assert _threads.usable_cpus() == 3
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: 0.2)
    assert _threads.usable_cpus() == 1
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: None)
    assert _threads.usable_cpus() == 8


def test_busy_cpus_from_proc_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  200 0 100 900 0 0 0 0 0 0\n"])
    monkeypatch.setattr(_threads.time, "sleep", lambda s: stat.write_text(next(samples)))
    stat.write_text(next(samples))
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 2)
    assert _threads.busy_cpus(0.2, stat) == pytest.approx(1.0)  # 100 busy of 200 jiffies on 2 CPUs


@pytest.mark.parametrize(("usable", "busy", "free"), [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 2.0, 1),
                                                      (2, 3.0, 1), (8, 2.6, 5), (4, None, 4)])
def test_free_cpus(usable: int, busy: float | None, free: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "busy_cpus", lambda sample_s: None)
    assert _threads.free_cpus(usable, busy) == free


def test_override_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "free_cpus", lambda **kw: 1)
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)
    assert _threads.job_threads(environ={}) == 1                                   # measured
    assert _threads.job_threads(environ={"EDGEMED_THREADS": "3"}) == 3            # env beats measured
    assert _threads.job_threads(2, environ={"EDGEMED_THREADS": "3"}) == 2         # explicit beats env
    assert _threads.job_threads(environ={"EDGEMED_THREADS": "legacy"}) == 4       # old: every usable CPU
    assert _threads.job_threads(environ={}, measure=False) == 4
    assert _threads.legacy_requested({"EDGEMED_THREADS": " Legacy "})
    assert not _threads.legacy_requested({})


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_bad_override(bad: str) -> None:
    with pytest.raises(ConfigError, match="EDGEMED_THREADS"):
        _threads.job_threads(environ={"EDGEMED_THREADS": bad})
    with pytest.raises(ConfigError, match="threads"):
        _threads.job_threads(bad)


def test_runtime_session_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.runtime import _host

    monkeypatch.setattr(_host, "physical_cores", lambda: 4)
    monkeypatch.setattr(_host, "usable_cpus", lambda: 4)
    monkeypatch.delenv("EDGEMED_THREADS", raising=False)
    monkeypatch.setattr(_host, "busy_cpus", lambda: 0.0)
    monkeypatch.setattr(_host, "free_cpus", lambda usable=None, busy=None: 4)
    assert _host.session_threads() == (4, True)          # idle: every core, spinning allowed
    monkeypatch.setattr(_host, "busy_cpus", lambda: 1.0)
    monkeypatch.setattr(_host, "free_cpus", lambda usable=None, busy=None: 3)
    assert _host.session_threads() == (3, False)         # one core busy: leave it, no spinning
    monkeypatch.setattr(_host, "busy_cpus", lambda: 4.0)
    assert _host.session_threads() == (4, False)         # none free: fair share of all cores, no spinning
    monkeypatch.setattr(_host, "busy_cpus", lambda: 1.0)
    assert _host.session_threads(1) == (1, False)
    monkeypatch.setenv("EDGEMED_THREADS", "2")
    assert _host.session_threads() == (2, False)
    assert _host.session_threads(4) == (4, False)        # explicit beats the environment
    monkeypatch.setenv("EDGEMED_THREADS", "legacy")
    assert _host.session_threads() == (4, True)          # the old behaviour


def test_runnable_tasks_reads_procs_running(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt 99\nprocs_running 3\nprocs_blocked 0\n")
    assert _threads.runnable_tasks(stat) == 3
    stat.write_text("cpu  1 2 3 4\n")
    assert _threads.runnable_tasks(stat) is None
    assert _threads.runnable_tasks(tmp_path / "missing") is None
    live = _threads.runnable_tasks()
    assert live is None or live >= 1  # this test's own thread is running while it reads
