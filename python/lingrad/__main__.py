"""python -m lingrad <command>: one entry point for the demo, the bench, the ladder, the lesson
and the ahead-of-time compile; ``python -m lingrad --version`` prints the version."""
import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

COMMANDS: Dict[str, Tuple[str, str]] = {
    "demo": ("lingrad.demo", "the lesson's forward and backward through lingrad, checked against numpy, timed"),
    "bench": ("lingrad.bench", "benchmark table: lingrad vs numpy (and PyTorch) per shape, dtype, threads"),
    "ladder": ("lingrad.ladder", "the optimisation ladder: each rung's GFLOP/s on the lesson's shape"),
    "lesson": ("lingrad.lesson", "train the lesson's MLP with lingrad's modules, loss per epoch"),
    "compile": ("lingrad.compile", "compile the kernels into Numba's cache now, not on first use"),
    "explain": ("lingrad.explainer", "what the plan runs for NxIxO: paths, blocks, threads, packing, fusions"),
    "overhead": ("lingrad.overhead", "Python time per entry point on a 1-row call: call, kernel, overhead"),
    "train": ("lingrad.train", "one SGD step of a 784-50-10 MLP: lingrad vs numpy, PyTorch, JAX per batch size"),
}


def usage() -> str:
    lines = ["usage: python -m lingrad <command> [options]", "       python -m lingrad --version",
             "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m lingrad <command> --help for a command's options"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from lingrad import __version__
        print(f"lingrad {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
