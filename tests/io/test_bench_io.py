"""The ``io`` benchmark group through the runner's command line: table on stdout, JSON records
with every field, ratio = value / baseline. Run on a small CT so that the test stays fast."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import bench_io

FIELDS = {"benchmark", "metric", "value", "unit", "baseline", "ratio", "device", "notes"}


def test_io_group_prints_a_table_and_writes_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_io, "SIZE", 64)
    monkeypatch.setattr(bench_io, "QUICK_SLICES", 12)
    monkeypatch.setattr(bench_io, "device_name", lambda: "cpu:test")  # spares a torch import here
    out = tmp_path / "io.json"
    assert bench_main.main(["io", "--quick", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["benchmark", "metric", "value", "unit", "baseline", "ratio",
                                             "device", "notes"]
    records = json.loads(out.read_text())
    assert [r["benchmark"] for r in records] == ["io.open_nifti", "io.open_dicom"]
    for r in records:
        assert set(r) == FIELDS
        assert r["benchmark"] in table
        assert r["unit"] == "s" and r["value"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
        assert "64x64x12 int16" in r["notes"] and "target ratio <= 1.3" in r["notes"]
        assert r["device"] == "cpu:test"


def test_unknown_group_is_an_error(capsys):
    with pytest.raises(SystemExit) as ei:
        bench_main.main(["iox"])
    assert ei.value.code != 0
    assert "unknown group" in capsys.readouterr().err
