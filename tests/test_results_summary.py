"""The README's results section must be exactly what scripts/summarize_results.py builds from benchmarks/."""

from pathlib import Path

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


def _summarize():
    return load_script(REPO / "scripts" / "summarize_results.py", "summarize_results")


def test_readme_results_match_the_measured_files():
    summarize = _summarize()
    readme = (REPO / "README.md").read_text()
    section = readme.split(summarize.START, 1)[1].split(summarize.END, 1)[0]
    assert section.strip() == summarize.build().strip(), (
        "run: python scripts/summarize_results.py --write-readme"
    )


def test_targets_are_judged_from_the_numbers(tmp_path):
    import json

    summarize = _summarize()
    results = {
        s: {"bicubic": {"psnr_y": 30.0, "ssim_y": 0.8}, "espcn-x3": {"psnr_y": 33.3, "ssim_y": 0.9}}
        for s in summarize.SETS
    }
    results["Set14"]["espcn-x3"]["psnr_y"] = 29.0
    (tmp_path / "eval_espcn-x3_x3.json").write_text(
        json.dumps({"scale": 3, "name": "espcn-x3", "command": "cmd", "seconds": 1.0, "results": results})
    )
    text = summarize.build(tmp_path)
    assert "| espcn-x3 Set5 PSNR-Y >= 33.2 | 33.30 | met |" in text
    assert "| espcn-x3 Set14 PSNR-Y >= 29.5 | 29.00 | **NOT met** (-0.50 dB) |" in text
    assert "| espcn-x2 Set5 >= 37.0 | not evaluated | NOT met |" in text


def test_results_are_read_as_eval_reports(tmp_path):
    """The summary reads benchmarks/ through EvalReport: a file without some sets shows dashes and 'not
    evaluated' instead of failing, and a damaged file is a clear EvalReportError naming it."""

    import pytest

    from espcn_hf.evaluation import EvalReport, EvalReportError

    summarize = _summarize()
    results = {
        "Set5": {"bicubic": {"psnr_y": 30.0, "ssim_y": 0.8}, "espcn-x3": {"psnr_y": 33.3, "ssim_y": 0.9}}
    }
    report = EvalReport.from_dict({"scale": 3, "name": "espcn-x3", "command": "cmd", "results": results})
    report.to_json(tmp_path / "eval_espcn-x3_x3.json")
    text = summarize.build(tmp_path)
    assert "| espcn-x3 | x3 | 33.30 / 0.9000 | – | – | – | 30.00 | – |" in text
    assert "| espcn-x3 Set14 PSNR-Y >= 29.5 | not evaluated | NOT met |" in text

    (tmp_path / "eval_espcn-x3_x3.json").write_text('{"scale": 3, "results": {"Set5": []}}')
    with pytest.raises(EvalReportError, match="eval_espcn-x3_x3.json"):
        summarize.build(tmp_path)
