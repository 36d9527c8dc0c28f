"""``python -m samtune`` runs the command line."""

import sys

from samtune.cli import main

sys.exit(main())
