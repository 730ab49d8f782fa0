# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark suite of ferry.docker: each data path of the collection against the plain shell one-liner.

``python -m benchmarks`` (``make bench``) runs the rows of ``benchmarks.rows`` on the local Docker
engine, side by side in the same run, and writes the figures to ``benchmarks/results/latest.json``.
BENCHMARKS.md at the repository root explains what is measured and holds the latest table.

This package is not part of the collection (galaxy.yml ``build_ignore``) and not a test suite.
"""
