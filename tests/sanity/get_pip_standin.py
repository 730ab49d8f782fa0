"""Offline stand-in for the pip bootstrap script that ansible-test sanity downloads.

ansible-test runs ``python get_pip.py [options] pip==X`` to put pip into each of its virtual
environments, and fetches that script from a host this machine cannot reach. This stand-in does the
same job with the interpreter's own ensurepip and the configured package index:

1. ``python -m ensurepip`` in a child process (ensurepip run in-process points PIP_CONFIG_FILE at
   /dev/null, and pip then loses this machine's index and CA settings);
2. ``python -m pip install`` with the arguments ansible-test gave, less ``--no-setuptools`` and
   ``--no-wheel``, which only get-pip.py understands.
"""

import subprocess
import sys

DROPPED = {"--no-setuptools", "--no-wheel"}

subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
args = [arg for arg in sys.argv[1:] if arg not in DROPPED]
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *args], check=False).returncode)
