"""The ``attn-course`` command: ``attn-course doctor`` and the course's other tools."""

from __future__ import annotations

import argparse
import sys

# jsonschema (under nbformat, which most commands read notebooks with) builds a grammar
# for rfc3987_syntax when that is installed: a second on every start, for URI formats
# that no course notebook has. The grader's worker and sandbox skip it the same way.
sys.modules.setdefault("rfc3987_syntax", None)

from attn_course import colab, doctor, lab, slides  # noqa: E402
from attn_course.grading import commands as grading_commands  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attn-course", description="Tools for the self-attention course."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("doctor", help="report versions, GPU, Triton mode and widget support")
    p.set_defaults(func=lambda args: doctor.main())
    grading_commands.register(sub)
    colab.register(sub)
    lab.register(sub)
    slides.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
