# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``python -m benchmarks``: see benchmarks/run.py."""

from __future__ import annotations

import sys

from benchmarks.run import main

sys.exit(main())
