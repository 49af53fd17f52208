import sys

from imd.cli import main

sys.exit(main())
