"""Options of the fuzz tests (pytest reads options only from conftest files).

    pytest tests/fuzz                          # the fast slice make test runs
    pytest tests/fuzz --fuzz-cases=10000 --fuzz-seed=random   # make fuzz
    pytest tests/fuzz --fuzz-seed=1234         # replay a run

The seed is printed at the start of each fuzz test and in every failure;
any single case can also be rebuilt with `python tests/fuzzing.py`.
"""

from __future__ import annotations

import os
import random

import pytest

DEFAULT_CASES = 3000
DEFAULT_SEED = "20240601"  # make test is deterministic; make fuzz asks for random
MIN_CLI_CASES = 150


def pytest_addoption(parser):
    group = parser.getgroup("spt fuzz")
    group.addoption("--fuzz-cases", type=int, default=None,
                    help="image mutations checked in-process (default $FUZZ_CASES or %d); "
                         "1 in 20 of them, at least %d, also run through solo5-spt"
                         % (DEFAULT_CASES, MIN_CLI_CASES))
    group.addoption("--fuzz-seed", default=None,
                    help="seed of the mutations, or 'random' (default $FUZZ_SEED or %s)"
                         % DEFAULT_SEED)


class FuzzConfig:
    def __init__(self, cases: int, seed: str):
        self.cases = cases
        self.seed = seed
        self.cli_cases = max(MIN_CLI_CASES, cases // 20)


@pytest.fixture(scope="session")
def fuzz_config(request) -> FuzzConfig:
    cases = request.config.getoption("--fuzz-cases") or int(os.environ.get("FUZZ_CASES")
                                                           or DEFAULT_CASES)
    seed = request.config.getoption("--fuzz-seed") or os.environ.get("FUZZ_SEED") or DEFAULT_SEED
    if seed == "random":
        seed = str(random.SystemRandom().randrange(1 << 32))
    return FuzzConfig(cases, seed)
