"""Test-only helpers shared by the Django suites, the browser stories and the benchmarks.

Kept outside the application packages so nothing here ships with, or is imported by, the
running application.
"""
