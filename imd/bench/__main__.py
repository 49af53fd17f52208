import sys

from imd.bench.cli import main

sys.exit(main())
