"""The shared report writers (`reports/`): Markdown tables one row a line whatever the
cell widths, and a reliability diagram, both importable without TensorFlow (the run
report imports them inside a TFX component)."""
import subprocess
import sys

from pfdx.reports import plots, tables


def test_tables_and_plots_import_without_tensorflow():
    code = ("import sys; import pfdx.reports.tables, pfdx.reports.plots; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_markdown_table_keeps_each_cell_as_given():
    text = tables.markdown_table(["strategy", "AUC"], [["none", "0.5"], ["ha_pfd_v2", "-"]])
    assert text.splitlines() == ["| strategy | AUC |", "| --- | --- |", "| none | 0.5 |",
                                 "| ha_pfd_v2 | - |"]


def test_numbers_are_rounded_and_missing_ones_are_a_dash():
    assert [tables.number(x) for x in (0.123456, None, float("nan"))] == ["0.1235", "-", "-"]
    assert tables.number(12.7, 0) == "13"


def test_a_reliability_diagram_is_a_png_also_with_nothing_to_draw():
    curves = [plots.Curve("student", [0.1, 0.5], [0.12, 0.4]), plots.Curve("empty", [], [])]
    for panels in ([("observed", curves)], [("observed", curves), ("true", curves[1:])]):
        assert plots.reliability_png(panels, "title")[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_history_is_a_png_with_gaps_for_missing_values():
    series = {"AUC": [0.7, None], "ECE": [None, 0.01]}
    png = plots.history_png(["2026-01-01", "2026-01-02 (w)"], series, "title")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
