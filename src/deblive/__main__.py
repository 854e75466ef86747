"""python -m deblive"""

import sys

from deblive.cli import main

sys.exit(main())
