"""Write ``make benchmarks``' measurements as one Markdown table, and put it in the README.

Reads the JSON lines the benchmark scripts kept (``timing.record``) and writes
``_build/benchmarks.md``: every ratio, with the machine, the library versions and the
date. With ``--readme``, the README's table between its ``benchmarks`` markers is
replaced by this one. Usage::

    python benchmarks/table.py LOG [--out _build/benchmarks.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path

BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict]) -> str:
    versions = ", ".join(f"{p} {_version(p)}" for p in ("jax", "jaxlib", "numpy", "torch", "transformers"))
    devices = sorted({f"{r['backend']}: {r['device']}" for r in rows})
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {_cpu()} ({os.cpu_count()} cores); "
        f"JAX devices: {', '.join(devices)}; {versions}.",
        "A ratio is the library's throughput over the reference's, both measured in the same process "
        "(best of several repeats; above 1 the library is faster).",
        "",
        "| benchmark | case | library | reference | unit | ratio |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['case']} | {r['library']:,.4g} | {r['reference']:,.4g} ({r['against']}) "
                     f"| {r['unit']} | **{r['ratio']:.2f}×** |")
    return "\n".join(lines) + "\n"


def put_in_readme(readme: Path, text: str) -> None:
    source = readme.read_text()
    if BEGIN not in source or END not in source:
        raise SystemExit(f"{readme} has no {BEGIN} … {END} markers to put the table between")
    block = f"{BEGIN}\n{text}{END}"
    readme.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, source, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, default=Path("_build/benchmarks.md"))
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{args.log} holds no measurements")
    text = table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Benchmarks\n\n" + text)
    if args.readme:
        put_in_readme(args.readme, text)
    print(text)


if __name__ == "__main__":
    main()
