"""Run the livedh server: `python server.py --help` lists every option."""

import argparse
import sys

from livedh.cli import add_serve_arguments, serve


def main() -> int:
    parser = argparse.ArgumentParser(description="livedh: real-time digital human server")
    add_serve_arguments(parser)
    return serve(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
