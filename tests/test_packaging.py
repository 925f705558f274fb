"""The installed wheel has one import root: genaccel (pipelines/ and ui/ map under it)."""

import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow  # builds the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        cwd=__file__.rsplit("/tests/", 1)[0],
    )
    (path,) = out.glob("genaccel-*.whl")
    return zipfile.ZipFile(path)


def test_single_import_root(wheel):
    roots = {name.split("/")[0] for name in wheel.namelist()}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"genaccel"}


def test_pipelines_ui_and_data_are_under_genaccel(wheel):
    names = set(wheel.namelist())
    assert "genaccel/pipelines/families.py" in names and "genaccel/ui/__init__.py" in names
    assert "genaccel/pipelines/presets/wan.toml" in names
    # the embedded models: the causal variant's folder names the base one next to it
    assert "genaccel/pipelines/embedded/model_index.json" in names
    assert {
        "genaccel/pipelines/embedded-causal/genaccel.toml",
        "genaccel/pipelines/embedded-causal/transformer/diffusion_pytorch_model.safetensors",
    } <= names


def test_every_module_of_the_library_is_in_the_wheel(wheel):
    from pathlib import Path

    root = Path(__file__).parents[1]
    modules = {f"genaccel/{path.relative_to(root / 'genaccel')}" for path in (root / "genaccel").rglob("*.py")}
    assert modules and modules <= set(wheel.namelist())  # subpackages too (streaming was once left out)


def test_console_script_and_extras(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith("METADATA"))
    text = wheel.read(meta).decode()
    assert "Provides-Extra: cuda" in text and "xformers" in text
    entry = wheel.read(next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "genaccel = genaccel.cli:main" in entry
