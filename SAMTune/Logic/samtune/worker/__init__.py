"""The background worker and what talks to it: job documents, running a job, the event protocol, run
folders, and the client that starts and watches a worker process (``docs/worker-protocol.md``).

``python -m samtune.worker`` runs :mod:`samtune.worker.main`. Nothing here imports PyTorch at import
time: the Slicer module uses the client and the job documents before torch is installed.
"""
