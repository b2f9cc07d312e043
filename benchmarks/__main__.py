"""python -m benchmarks [--quick] [--publish] [--no-progress]
                     [--cases entry,cold_start,pool_start,throughput,unit_start,oneshot,scale]

Only --publish rewrites the committed RESULTS.md and RESULTS.png (see benchmarks/README.md).
"""

import sys

from .suite import main

sys.exit(main())
