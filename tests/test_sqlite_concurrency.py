"""The embedded SQLite database under writes from several processes at once (web + worker).

A deferred transaction that reads and then writes fails at once with "database is locked" when
another connection wrote in between; the settings make every transaction IMMEDIATE, so writers
queue on the lock instead. This runs real OS processes against one database file.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

WRITER = """
import os, sys
import django
django.setup()
from django.db import transaction
from nextframe.tenancy.models import Organization
org = Organization.objects.get(name="shared")
for i in range(int(sys.argv[1])):
    with transaction.atomic():
        n = Organization.objects.filter(name__startswith="w").count()   # read first ...
        Organization.objects.create(name=f"w{os.getpid()}-{i}-{n}")     # ... then write
print("ok")
"""


@pytest.mark.slow
@pytest.mark.profile("embedded")  # its processes run on a SQLite file of their own
def test_concurrent_read_then_write_transactions_from_processes_all_succeed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL"))}
    env.update(NEXTFRAME_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="nextframe.settings")
    subprocess.run([sys.executable, "-m", "nextframe.cli", "manage", "migrate", "-v", "0"], env=env, check=True)
    subprocess.run([sys.executable, "-m", "nextframe.cli", "createorg", "shared"], env=env, check=True,
                   capture_output=True)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, "40"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
