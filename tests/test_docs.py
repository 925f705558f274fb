"""The README states what the code does: its compatibility matrix and quick start stay current."""

import re
from pathlib import Path

from genaccel.catalog import catalog, compatibility_table

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_matrix_matches_the_code():
    block = re.search(r"<!-- compatibility:start -->\n(.*?)\n<!-- compatibility:end -->", README, re.S).group(1)
    assert block.strip() == compatibility_table(catalog()).strip()


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"<!-- quickstart:(\w+) -->\n```\n(.+?)\n```", README)
    assert [name for name, _ in commands] == ["generate", "test"]
    assert "genaccel generate" in commands[0][1] and "pytest" in commands[1][1]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "quickstart:test" in ci


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The Python API section's code runs as written (in a scratch folder: it writes clip.mp4)."""
    block = re.search(r"## Python API\n\n```python\n(.*?)\n```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert (tmp_path / "clip.mp4").is_file()
    assert namespace["prepared"].spec.text == namespace["result"].request.accel  # the last run used `balanced`


def test_readme_streaming_example_runs(capsys):
    """The Streaming section's Python example runs as written (20 chunks of the embedded causal model)."""
    block = re.search(r"## Streaming \(causal models\).*?```python\n(.*?)\n```", README, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and lines[0].startswith("0 (1, 64, 64, 3)") and lines[-1].startswith("19 (4, 64, 64, 3)")
