"""tests/house reads the project's source; imports.py is its helper."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
