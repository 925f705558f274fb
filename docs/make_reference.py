"""Write docs/commands.md, the command reference, from the command line's argparse parsers.

    python docs/make_reference.py

Run it after changing an option or a help text in genaccel/cli.py; tests/test_docs.py fails until the
file matches the parsers.
"""

from pathlib import Path

from genaccel.cli import build_parser
from genaccel.tools.reference import render_reference

OUT = Path(__file__).with_name("commands.md")

if __name__ == "__main__":
    OUT.write_text(render_reference(build_parser()))
    print(f"wrote {OUT}")
