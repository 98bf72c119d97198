"""`python -m gsau ...` (what torchrun launches: `torchrun --nproc-per-node N -m gsau train ...`)."""

import sys

from gsau.cli import main

sys.exit(main())
