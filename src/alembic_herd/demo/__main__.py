"""``python -m alembic_herd.demo [--replicas N] [--url URL] [--keep]``: the demo on its own."""

from __future__ import annotations

import sys

from . import MAX_REPLICAS, main

USAGE = f"""usage: python -m alembic_herd.demo [--replicas N] [--url URL] [--keep]

Start N replicas (default 8, at most {MAX_REPLICAS}) at once on a sample migration project and
watch one migrate while the others wait. Without --url an embedded PostgreSQL is started
in a temporary folder (pip install 'alembic-herd[demo]'); --url must name a scratch
database (the demo creates tables users, products, orders there). --keep leaves the
embedded server running."""


def parse(argv: list[str]) -> dict[str, object] | str:
    """Keyword arguments for :func:`main`, or the message for a usage error."""
    options: dict[str, object] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--replicas", "-n", "--url"):
            if not eq:
                if not args:
                    return f"{name} needs a value"
                value = args.pop(0)
            if name == "--url":
                options["url"] = value
            elif value.isdigit():
                options["replicas"] = int(value)
            else:
                return f"{name} must be a whole number, got {value!r}"
        elif arg == "--keep":
            options["keep"] = True
        else:
            return f"unknown argument {arg!r}"
    return options


def run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    options = parse(argv)
    if isinstance(options, str):
        print(f"{USAGE}\n\nerror: {options}", file=sys.stderr)
        return 3
    return main(**options)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
