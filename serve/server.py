"""Entry point of the server: parses the ``genrec serve`` flags and calls ``generative_rec.serving.cli``'s
``cmd_serve`` (which calls ``generative_rec.serving.launch.serve``), exactly as ``genrec serve`` does.

    python serve/server.py --bundle B [--port 8000 --api-key K ...] [-- vLLM flags]

See docs/serving.md for the routes, schemas and ``vllm_xargs`` keys.
"""

import argparse

from generative_rec.serving.cli import register


def main() -> None:
    parser = argparse.ArgumentParser(prog="serve/server.py")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *__import__("sys").argv[1:]])
    args.fn(args)


if __name__ == "__main__":  # vLLM starts its engine processes with spawn
    main()
