"""python -m benchmarks [--quick] [--cases entry,cold_start,pool_start,throughput,unit_start]"""

import sys

from .suite import main

sys.exit(main())
