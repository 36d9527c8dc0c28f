"""SAMTune core: fine-tune and run the Segment Anything Model on medical volumes.

Pure Python (torch, numpy, SimpleITK). Never imports slicer, qt, ctk or vtk, so it runs the same
in the Slicer worker process, on a GPU server from the command line, and in tests.
"""

__version__ = "0.1.0"
