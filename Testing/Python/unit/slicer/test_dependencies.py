"""Which packages are missing, from the real installed distributions (importlib.metadata)."""

from __future__ import annotations

from SAMTuneLib import Dependencies


def test_installed_requirements_are_satisfied():
    assert Dependencies.missingRequirements() == []  # the dev environment has everything


def test_missing_and_too_old_packages_are_reported_with_what_is_needed():
    missing = Dependencies.missingRequirements({"torch": "99.0", "surely-not-a-package-xyz": "1.0", "numpy": "1.0"})
    assert [r.name for r in missing] == ["torch", "surely-not-a-package-xyz"]
    assert missing[0].installed == Dependencies.installedVersion("torch")
    assert missing[0].describe().endswith("(too old; needs >= 99.0)")
    assert missing[1].describe() == "surely-not-a-package-xyz (not installed; needs >= 1.0)"
    assert missing[1].specifier == "surely-not-a-package-xyz>=1.0"


def test_version_order_and_restart_rule():
    assert Dependencies.versionTuple("2.14.1+cu121") == (2, 14, 1)
    assert Dependencies.versionTuple("0.29.1") > Dependencies.versionTuple("0.16")
    assert Dependencies.versionTuple("1.0rc1") == (1, 0)
    import torch  # noqa: F401 - imported, so upgrading it needs a restart

    too_old = Dependencies.missingRequirements({"torch": "99.0"})
    assert Dependencies.restartNeeded(too_old)
    assert not Dependencies.restartNeeded(Dependencies.missingRequirements({"surely-not-a-package-xyz": "1"}))


def test_pip_gets_a_constraint_that_pins_what_slicer_bundles(tmp_path):
    missing = Dependencies.missingRequirements({"torch": "99.0", "surely-not-a-package-xyz": "1.0"})
    arguments = Dependencies.pipArguments(missing, str(tmp_path / "c.txt"))
    assert arguments == ["-c", str(tmp_path / "c.txt"), "surely-not-a-package-xyz>=1.0"]  # torch goes through PyTorch
    pins = Dependencies.bundledConstraints().splitlines()
    assert f"numpy=={Dependencies.installedVersion('numpy')}" in pins
    assert f"SimpleITK=={Dependencies.installedVersion('SimpleITK')}" in pins
