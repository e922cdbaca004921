"""`python -m rlpg ...`, what torchrun launches (torchrun --nproc-per-node K -m rlpg train ...): the rlpg command."""

import sys

from rlpg.cli import main

sys.exit(main())
