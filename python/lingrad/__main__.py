"""python -m lingrad <command>: one entry point for the demo, the bench, the ladder and the lesson."""
import importlib
import sys

COMMANDS = {
    "demo": ("lingrad.demo", "the lesson's forward and backward through lingrad, checked against numpy, timed"),
    "bench": ("lingrad.bench", "benchmark table: lingrad vs numpy (and PyTorch) per shape, dtype, threads"),
    "ladder": ("lingrad.ladder", "the optimisation ladder: each rung's GFLOP/s on the lesson's shape"),
    "lesson": ("lingrad.lesson", "train the lesson's MLP with lingrad's modules, loss per epoch"),
    "train": ("lingrad.train", "one SGD step of a 784-50-10 MLP: lingrad vs numpy, PyTorch, JAX per batch size"),
}


def usage():
    lines = ["usage: python -m lingrad <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m lingrad <command> --help for a command's options"]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
