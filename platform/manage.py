#!/usr/bin/env python
"""Django's command-line utility for the NextFrame control plane (also: `nextframe manage ...`)."""
import os
import sys
from pathlib import Path


def main() -> None:
    # platform/ is a container folder: put it on the path so `nextframe` imports without an install.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
