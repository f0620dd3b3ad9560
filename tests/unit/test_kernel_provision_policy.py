"""The kernel harness installs the mq tier's irqbalance without starting it on the host:
a policy-rc.d that forbids every service start is there for the install and gone after;
a machine's own policy-rc.d is left alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels import provision


@pytest.fixture
def apt(monkeypatch):
    calls: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(provision, "missing_packages", lambda packages: list(packages))
    return calls


def _recording(calls, policy: Path):
    def run(cmd, **kwargs):
        calls.append((cmd, policy.exists() and policy.read_text()))
    return run


def test_no_service_starts_during_the_install_and_the_policy_is_gone_after(tmp_path, apt, monkeypatch):
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(provision, "_run", _recording(apt, policy))
    provision.ensure_packages(provision.MQ_PACKAGES, start_services=False, policy_rc_d=policy)
    install = next(text for cmd, text in apt if "install" in cmd)
    assert install and "exit 101" in install
    assert not policy.exists()


def test_a_failed_install_still_removes_the_policy(tmp_path, apt, monkeypatch):
    policy = tmp_path / "policy-rc.d"

    def run(cmd, **kwargs):
        if "install" in cmd:
            raise provision.ProvisionError("apt failed")
    monkeypatch.setattr(provision, "_run", run)
    with pytest.raises(provision.ProvisionError):
        provision.ensure_packages(provision.MQ_PACKAGES, start_services=False, policy_rc_d=policy)
    assert not policy.exists()


def test_the_machines_own_policy_is_kept(tmp_path, apt, monkeypatch):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(provision, "_run", _recording(apt, policy))
    provision.ensure_packages(provision.MQ_PACKAGES, start_services=False, policy_rc_d=policy)
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_other_packages_leave_services_to_apt(tmp_path, apt, monkeypatch):
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(provision, "_run", _recording(apt, policy))
    provision.ensure_packages(provision.HOST_PACKAGES, policy_rc_d=policy)
    assert all(text is False for _cmd, text in apt)
