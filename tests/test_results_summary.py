"""The README's results section must be exactly what scripts/summarize_results.py builds from benchmarks/, and
model_card.md what it renders now."""

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


def test_gpu_targets_are_judged_from_the_slot_files(tmp_path):
    import json

    summarize = _summarize()
    (tmp_path / "data_throughput_cuda.json").write_text(
        json.dumps({"device": "GPU X", "patches_per_s": 80000})
    )
    run = tmp_path / "runs" / "espcn-x3-gpu"
    run.mkdir(parents=True)
    curve = [(2000, 45.0, 32.1), (4000, 88.0, 32.62), (6000, 200.0, 32.9), (8000, 240.0, 32.95)]
    run.joinpath("metrics.jsonl").write_text(
        "".join(json.dumps({"step": a, "seconds": b, "set5_psnr": c}) + "\n" for a, b, c in curve)
    )
    run.joinpath("run.json").write_text(json.dumps({"device": "cuda", "mixed_precision": "bf16"}))
    rows = [{"scale": 3, "method": "espcn [channels_last]", "ms": 1.3}]
    whole = [{"scale": 3, "method": "espcn [channels_last]", "ms": 1.0}]
    for name, r in (("speed_cuda.json", rows), ("speed_cuda_whole_frame.json", whole)):
        (tmp_path / name).write_text(json.dumps({"device": "GPU X", "command": "cmd", "rows": r}))
    (tmp_path / "speed_video_cuda.md").write_text(
        "# t\n\n| case | decode | SR espcn | encode | end to end |\n|---|---:|---:|---:|---:|\n"
        "| x3 640x360 -> 1920x1080 | 300.0 | 200.0 | 150.0 | 130.5 |\n"
    )
    text = summarize.build(tmp_path)
    assert "| device data path on GPU X: >= 90,000 32x32 patches/s | 80,000 | **NOT met** |" in text
    assert "Set5 >= 32.6 dB by 90 s | 32.62 | met |" in text
    assert "Set5 >= 33.0 dB by 240 s | 32.95 | **NOT met** (-0.05 dB; never in the run) |" in text
    assert "whole-frame model (worst scale) | 1.30x (x3) | **NOT met** |" in text
    assert "end to end >= 120 fps | 130.5 fps (decode 300.0, SR 200.0, encode 150.0 fps) | met |" in text


def test_model_card_is_the_hub_card_of_the_default_model(data_dir):
    """Issue "A fresh machine passes": model_card.md is the card of espcn-x3 as its Hub repository shows
    it (the upload folder's README.md, tests/test_hub.py), rendered from the packaged weights and the results
    files of now: new weights or results make it stale until the script is run."""
    summarize = _summarize()
    committed = (REPO / summarize.MODEL_CARD).read_text()
    assert committed == summarize.model_card(), "run: python scripts/summarize_results.py --write-readme"
    assert "model-index" in committed and "](comparison.png)" in committed and "{{" not in committed


def test_write_readme_writes_both_files_or_neither(tmp_path, monkeypatch, capsys):
    summarize = _summarize()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{summarize.START}\nold\n{summarize.END}\ntail\n")
    monkeypatch.setattr(summarize, "REPO", tmp_path)
    monkeypatch.setenv("ESPCN_HF_DATA_DIR", str(tmp_path / "no-data"))  # the comparison photo is missing
    assert summarize.main(["--write-readme"]) == 1
    assert "comparison photo is missing" in capsys.readouterr().err
    assert "old" in readme.read_text() and not (tmp_path / summarize.MODEL_CARD).exists()

    monkeypatch.setattr(summarize, "model_card", lambda: "the card\n")
    assert summarize.main(["--write-readme"]) == 0
    assert (tmp_path / summarize.MODEL_CARD).read_text() == "the card\n"
    assert readme.read_text() == f"# x\n\n{summarize.START}\n{summarize.build()}{summarize.END}\ntail\n"


def test_the_experiments_table_is_current():
    """benchmarks/runs/README.md lists every run folder there, from its own files (scripts/runs_table.py)."""
    runs_table = load_script(REPO / "scripts" / "runs_table.py", "runs_table")
    assert runs_table.main(["--check"]) == 0, "run: python scripts/runs_table.py"
    text = (REPO / "benchmarks" / "runs" / "README.md").read_text()
    generated = text.split(runs_table.START, 1)[1].split(runs_table.END, 1)[0]
    rows = [line for line in generated.splitlines() if line.startswith("| ")]
    folders = [p for p in (REPO / "benchmarks" / "runs").iterdir() if (p / "run.json").is_file()]
    assert len(rows) == len(folders) + 1  # the header
