"""Shared fixtures: one real IPython shell per test session, and fake NVML sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_nvml import fake_session

from vram_magic.readings import nvml


@pytest.fixture(scope="session")
def shell():  # type: ignore[no-untyped-def]
    """The one real IPython ``InteractiveShell`` of this test session."""
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture(autouse=True)
def shell_left_as_found(request):  # type: ignore[no-untyped-def]
    """Tests share one shell: a test that loads vram_magic there unloads it again (a wider
    fixture that loaded it is set up before this one and unloads it itself), so the next test
    finds the shell as it was; a leak fails here, not as a later test's puzzle."""
    from IPython.core.interactiveshell import InteractiveShell

    from vram_magic.ipython.extension import loaded_in

    def loaded() -> bool:
        return InteractiveShell.initialized() and loaded_in(InteractiveShell.instance()) is not None

    was = loaded()
    yield
    if loaded() and not was:
        InteractiveShell.instance().run_cell("%unload_ext vram_magic")
        pytest.fail(f"{request.node.name} left vram_magic loaded in the shared shell")


@pytest.fixture
def use_recording() -> Iterator:
    """Make a recording (by name) the process-wide NVML for one test; restored afterwards."""
    previous = nvml.default_session()

    def use(name: str):  # type: ignore[no-untyped-def]
        session = fake_session(name)
        nvml.set_default_session(session)
        return session

    yield use
    nvml.set_default_session(previous)


@pytest.fixture
def vram(shell):  # type: ignore[no-untyped-def]
    """The shell with vram_magic loaded and torch imported; stranded memory freed afterwards."""
    shell.run_cell("%load_ext vram_magic")
    shell.run_cell("import torch, weakref")
    yield shell
    shell.run_cell("%vram free")
    shell.run_cell("%unload_ext vram_magic")


@pytest.fixture
def snapshot_dir(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Snapshots of this test go to a fresh folder (``vram_magic.settings.snapshot_dir``)."""
    from vram_magic.config import settings

    folder = tmp_path / "snapshots"
    monkeypatch.setattr(settings, "snapshot_dir", str(folder))
    return folder


@pytest.fixture
def jp_server_config():  # type: ignore[no-untyped-def]
    """The real Jupyter server of the server tiers (pytest-jupyter), with the extension on and
    anonymous requests refused."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"vram_magic": True},
            "allow_unauthenticated_access": False,
        }
    }
