"""The ``attn-course`` command: ``attn-course doctor`` and the course's other tools."""

from __future__ import annotations

import argparse
import sys

from attn_course import colab, doctor, lab, slides
from attn_course.grading import commands as grading_commands


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
