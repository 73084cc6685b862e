"""CSV exports (portal/csv_export.py): spreadsheet formulas neutralised."""

import pytest

from portal.csv_export import neutralise

pytestmark = pytest.mark.django_db


def test_neutralise_quotes_formula_prefixes():
    for cell in ["=1+1", "+1", "-1+2", "-A1", "@SUM(A1)", "\tx", "\rx"]:
        assert neutralise(cell) == "'" + cell
    assert neutralise("plain") == "plain"
    assert neutralise("-150.00") == "-150.00"  # a debit stays a number a spreadsheet can add up
