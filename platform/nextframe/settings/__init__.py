"""Settings entry point: everything comes from the environment (see base.py)."""
from nextframe.settings.base import *  # noqa: F401,F403
