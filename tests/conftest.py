"""Pytest setup: the scripts live at the repository root, one level up."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
