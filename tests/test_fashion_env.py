"""DEVISE_FASHION_MNIST_DIR: the folder read before any download, and the offline hint."""

from pathlib import Path

import pytest

from model.data import datasets


def test_env_dir_is_read_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    assert datasets.fashion_mnist_dir() == tmp_path
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV)
    assert datasets.fashion_mnist_dir() == datasets.FASHION_MNIST_SYSTEM_DIR


@pytest.fixture
def offline_empty_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """DEVISE_FASHION_MNIST_DIR names an empty folder, and every download fails."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(empty))

    def offline(*_a: object, **_k: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(datasets, "urlopen", offline)
    return empty


@pytest.mark.usefixtures("offline_empty_dir")
def test_empty_env_dir_offline_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(datasets, "apt_install_command", lambda: None)
    with pytest.raises(datasets.DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.read_fashion_mnist("test", cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.usefixtures("offline_empty_dir")
def test_offline_installs_the_package_when_it_can(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(datasets, "apt_install_command", lambda: ["apt-get"])
    ran: list[list[str]] = []
    monkeypatch.setattr(datasets, "_apt_install_fashion", lambda apt: ran.append(apt) or False)
    with pytest.raises(datasets.DatasetError, match="dataset-fashion-mnist"):
        datasets.read_fashion_mnist("test", cache_dir=tmp_path / "cache", progress=False)
    assert ran == [["apt-get"]]


@pytest.mark.usefixtures("offline_empty_dir")
def test_the_makefile_demo_path_says_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make demo` runs `devise demo`: offline, with the dataset folder empty and no way to
    install, it stops at the first stage with the one command to run, and no traceback."""
    from app.cli import main

    monkeypatch.setattr(datasets, "apt_install_command", lambda: None)
    argv = ["--cache", str(tmp_path / "c"), "demo", "--no-launch", "--dir", str(tmp_path / "demo")]
    rc = main([*argv, "--index", str(tmp_path / "index")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "[1/5] exporting" in captured.out and "[2/5]" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "apt-get install -y dataset-fashion-mnist" in errors[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "demo" / "train" / ".done").exists()  # a rerun tries again


@pytest.mark.usefixtures("offline_empty_dir")
def test_the_makefile_demo_path_installs_the_package_when_it_can(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setattr(datasets, "apt_install_command", lambda: ["apt-get"])
    ran: list[list[str]] = []
    monkeypatch.setattr(datasets, "_apt_install_fashion", lambda apt: ran.append(apt) or False)
    argv = ["--cache", str(tmp_path / "c"), "demo", "--no-launch", "--dir", str(tmp_path / "demo")]
    assert main([*argv, "--index", str(tmp_path / "index")]) == 1
    assert ran == [["apt-get"]]  # the install step ran (here, a failing one)
    assert "dataset-fashion-mnist" in capsys.readouterr().err
