"""``python -m samtune.worker --job job.json`` (see :mod:`samtune.worker.main`)."""

import os

from samtune.worker.main import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
