"""``python -m mlxsight demo`` (a tour on the bundled model), ``python -m mlxsight bench``, or
``python -m mlxsight serve [MODEL] [--host 127.0.0.1] [--port N]`` (the local web app)."""

import sys


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if command == "demo":
        from .demo import main as run
    elif command == "bench":
        from .bench import main as run
    elif command == "serve":
        from .app import main as run
    else:
        print(__doc__)
        return 2
    return run(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
