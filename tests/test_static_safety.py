"""Static checks over the source: nothing runs code from data, and servers stay on this machine by default.

Every Python file of the library, the adapters, the UI, training, benchmarks and examples is parsed; the
checks are on calls, not text, so a docstring that mentions pickle does not trip them.

ruff's security rules (pyproject's [tool.ruff.lint], run in CI) check the rest: eval() (S307), exec()
(S102), pickle and dill loads (S301), marshal loads (S302), yaml.load without a safe loader (S506) and
shell=True (S602, S604). What ruff has no rule for stays here.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p
    for folder in ("genaccel", "pipelines", "ui", "training", "benchmarks", "examples")
    for p in (ROOT / folder).rglob("*.py")
)


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    """'torch.load' for torch.load(...), 'eval' for eval(...)."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_the_scan_sees_the_sources():
    assert len(SOURCES) > 50 and ROOT / "genaccel" / "cli.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_runs_from_data(path):
    problems = []
    for call in _calls(path):
        name = _name(call.func)
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if isinstance(call.func, ast.Name) and name in ("compile", "__import__"):  # the builtins
            problems.append(f"{where}: {name}()")
        if name == "torch.load" and not _true(_keyword(call, "weights_only")):
            problems.append(f"{where}: torch.load without weights_only=True")
        if name == "yaml.unsafe_load":
            problems.append(f"{where}: {name}()")
        if _true(_keyword(call, "trust_remote_code")):
            problems.append(f"{where}: trust_remote_code=True")
        if (
            name.endswith("from_pretrained")
            and _keyword(call, "use_safetensors") is not None
            and not _true(_keyword(call, "use_safetensors"))
        ):
            problems.append(f"{where}: from_pretrained allowing pickle weights")
    assert not problems, problems


def test_servers_listen_on_this_machine_unless_told():
    import inspect

    from genaccel.cli import build_parser
    from genaccel.ui.app import launch

    ui = build_parser().parse_args(["ui"])
    assert ui.host == "127.0.0.1" and ui.share is False
    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(launch).parameters["share"].default is False
