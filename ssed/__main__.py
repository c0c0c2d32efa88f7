"""`python3 -m ssed`: the daemon."""
import sys

from .cli import main

sys.exit(main())
