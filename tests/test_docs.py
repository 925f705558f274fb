"""The README and docs/ state what the code does: the compatibility matrix, the command reference, the quick
start and the examples stay current, and every relative link leads to a file."""

import re
from pathlib import Path

import pytest

from genaccel.cli import build_parser
from genaccel.tools.catalog import catalog, compatibility_table
from genaccel.tools.reference import render_reference

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_matrix_matches_the_code():
    page = (DOCS / "accelerators.md").read_text()
    block = re.search(r"<!-- compatibility:start -->\n(.*?)\n<!-- compatibility:end -->", page, re.S).group(1)
    assert block.strip() == compatibility_table(catalog()).strip(), (
        "docs/accelerators.md's compatibility matrix differs from the code: paste `compatibility_table(catalog())`"
    )


def test_command_reference_matches_the_parsers():
    written = (DOCS / "commands.md").read_text()
    assert written == render_reference(build_parser()), (
        "docs/commands.md differs from the command line's parsers: run `python docs/make_reference.py`"
    )


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"<!-- quickstart:(\w+) -->\n```\n(.+?)\n```", README)
    assert [name for name, _ in commands] == ["generate", "test"]
    assert "genaccel generate" in commands[0][1] and "pytest" in commands[1][1]
    assert re.search(r"--accel (?!none\b)\S+", commands[0][1]), "the quick start's video is accelerated"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "quickstart:test" in ci


def _links(text: str) -> list[str]:
    """Targets of the Markdown links and images in `text`, code spans and fenced blocks left out."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    broken = []
    for target in _links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_the_link_check_sees_links():
    assert {"docs/commands.md", "BENCHMARKS.md"} <= set(_links(README))
    assert "images/ui-generate.png" in _links((DOCS / "ui.md").read_text())


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API section runs as written (in a scratch folder: it writes clip.mp4)."""
    block = re.search(r"## Python API\n\n```python\n(.*?)\n```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert (tmp_path / "clip.mp4").is_file()
    assert namespace["prepared"].spec.text == namespace["result"].request.accel  # the last run used `balanced`


@pytest.mark.slow
def test_streaming_example_runs(capsys):
    """docs/streaming.md's Python example runs as written (20 chunks of the embedded causal model)."""
    page = (DOCS / "streaming.md").read_text()
    block = re.search(r"## From Python\n.*?```python\n(.*?)\n```", page, re.S).group(1)
    exec(compile(block, "docs/streaming.md", "exec"), {})  # noqa: S102 - the page's own example
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and lines[0].startswith("0 (1, 64, 64, 3)") and lines[-1].startswith("19 (4, 64, 64, 3)")
