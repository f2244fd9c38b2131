import sys

from tradeoff.cli import main

sys.exit(main())
