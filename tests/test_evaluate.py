"""evaluation.evaluate, the EvalReport results format, and scripts/evaluate.py on the tiny fixture set."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, psnr, ssim
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.data import load_benchmark
from espcn_hf.degradation import bicubic_degrade, imresize, mod_crop, quantize
from espcn_hf.evaluation import (
    EvalReport,
    EvalReportError,
    SetScores,
    bicubic_upscaler,
    evaluate,
)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "evaluate.py"
TINY = {"hidden_channels": [4, 4], "kernel_sizes": [3, 3, 3]}


def load_evaluate_script(path: Path = SCRIPT):
    return load_script(path)


def tiny_model(scale: int) -> ESPCNForImageSuperResolution:
    torch.manual_seed(0)
    return ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=scale, **TINY))


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_scores_equal_direct_computation(scale):
    ds = load_benchmark("tiny_set", root=FIXTURES, scale=scale)
    report = evaluate({"bicubic": bicubic_upscaler(scale)}, {"tiny": ds}, scale)
    result = report.results["tiny"]["bicubic"]
    psnrs, ssims = [], []
    for path in sorted((FIXTURES / "tiny_set").glob("*.png")):
        hr = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].double() / 255
        hr = mod_crop(hr, scale)
        sr = quantize(imresize(bicubic_degrade(hr, scale), scale=scale))
        psnrs.append(psnr(sr, hr, scale=scale))
        ssims.append(ssim(sr, hr, scale=scale))
    assert result.num_images == 3
    assert result.psnr_y == pytest.approx(float(np.mean(psnrs)), abs=1e-9)
    assert result.ssim_y == pytest.approx(float(np.mean(ssims)), abs=1e-9)
    assert 15 < result.psnr_y < 60


def test_model_scores_outputs_and_mode_restored():
    model = tiny_model(2).train()
    ds = load_benchmark("tiny_set", root=FIXTURES, scale=2)
    report = evaluate(
        {"tiny": model}, {"tiny_set": ds}, 2, keep_outputs={"tiny_set": ["rings"]}, rgb_ssim=True
    )
    scores = report.results["tiny_set"]["tiny"]
    assert all(math.isfinite(getattr(scores, k)) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"))
    assert set(scores.per_image) == {"blocks", "rings", "stripes"}
    kept = report.outputs["tiny_set"]["tiny"]["rings"]
    assert kept.shape == (60, 72, 3) and kept.dtype == np.uint8
    assert model.training, "evaluate must give the model back in the mode it came in"
    alone = evaluate(model, {"tiny_set": ds}, 2)  # a bare model is method "model"
    assert alone.results["tiny_set"]["model"].psnr_y == scores.psnr_y


class _FakeAccelerator:
    """Rank `process_index` of `num_processes`; enough of accelerate.Accelerator for `evaluate`."""

    def __init__(self, process_index: int, num_processes: int):
        self.process_index, self.num_processes = process_index, num_processes

    def unwrap_model(self, model):
        return model


def test_sharded_evaluation_gathers_to_the_single_process_report(monkeypatch):
    """Two ranks each score every other image; after the gather both hold exactly the one-process numbers."""
    import accelerate.utils

    ds = load_benchmark("tiny_set", root=FIXTURES, scale=2)
    methods = {"bicubic": bicubic_upscaler(2), "tiny": tiny_model(2)}
    single = evaluate(methods, {"tiny_set": ds}, 2)

    shards: dict[int, list] = {}
    calls = iter(range(10**6))

    def gather_rank1(local):  # rank 1 runs first and records its shard
        shards[next(calls)] = local
        return local

    monkeypatch.setattr(accelerate.utils, "gather_object", gather_rank1)
    evaluate(methods, {"tiny_set": ds}, 2, accelerator=_FakeAccelerator(1, 2))
    recorded = [shards[i] for i in sorted(shards)]
    assert [row[1] for row in recorded[0]] == [ds.names[1]]  # rank 1 of 2 gets image 1 only

    replay = iter(recorded)
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda local: local + next(replay))
    sharded = evaluate(methods, {"tiny_set": ds}, 2, accelerator=_FakeAccelerator(0, 2))
    for method in methods:
        one, two = single.results["tiny_set"][method], sharded.results["tiny_set"][method]
        assert two.num_images == 3
        assert list(two.per_image) == ds.names  # dataset order, whatever the gather order
        assert (two.psnr_y, two.ssim_y, two.psnr_rgb) == (one.psnr_y, one.ssim_y, one.psnr_rgb)


def _report() -> EvalReport:
    return EvalReport(
        scale=3,
        results={
            "Set5": {
                "bicubic": SetScores(30.404666250339, 0.86897381434996, 28.6263217, 5, 0.02),
                "espcn-x3": SetScores(32.564858567142224, 0.9066642794450896, 30.5854, 5, 0.08, ssim_rgb=0.9),
            },
            "Set14": {"bicubic": SetScores(27.63409308128229, 0.7759788890349721, 25.94, 14, 0.1)},
        },
        name="espcn-x3",
        model="checkpoints/espcn-x3",
        command="scripts/evaluate.py --model checkpoints/espcn-x3 --scale 3",
        seconds=77.6,
        environment={"torch": "2.13.0+cpu", "device": "cpu"},
    )


def test_report_json_round_trip_is_exact(tmp_path):
    report = _report()
    path = tmp_path / "eval.json"
    text = report.to_json(path)
    assert path.read_text() == text
    data = json.loads(text)
    assert list(data) == ["model", "name", "scale", "command", "results", "methods", "seconds", "environment"]
    assert list(data["results"]["Set5"]["espcn-x3"]) == [
        "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "num_images", "seconds"
    ]  # fmt: skip
    assert "ssim_rgb" not in data["results"]["Set5"]["bicubic"]
    assert data["methods"] == ["bicubic", "espcn-x3"]
    again = EvalReport.from_json(path)
    assert again == report and again.to_json() == text
    assert EvalReport.from_json(text) == report  # JSON text works too


def test_committed_results_files_are_reports():
    """Every results file in benchmarks/ reads as an EvalReport and writes back to the same numbers."""
    files = sorted((REPO / "benchmarks").glob("eval_*.json"))
    assert files
    for path in files:
        report = EvalReport.from_json(path)
        assert json.loads(report.to_json()) == json.loads(path.read_text()), path.name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"name": "x"}', "lacks"),
        ('{"scale": 3, "results": {"Set5": 1}}', "must map set names"),
        ('{"scale": 3, "results": {"Set5": {"m": {"psnr_y": 1}}}}', "Set5/m"),
    ],
)
def test_bad_results_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "eval.json"
    path.write_text(content)
    with pytest.raises(EvalReportError, match=message):
        EvalReport.from_json(path)
    with pytest.raises(EvalReportError, match="cannot read"):
        EvalReport.from_json(tmp_path / "missing.json")


def test_markdown_table():
    report = _report()
    table = report.to_markdown(full=False, labels={"bicubic": "Bicubic"}, highlight="espcn-x3")
    assert table.splitlines() == [
        "| Set | Bicubic | **espcn-x3** |",
        "|---|---|---|",
        "| Set5 | 30.40 / 0.8690 | **32.56 / 0.9067** |",
        "| Set14 | 27.63 / 0.7760 | – |",
    ]
    document = report.to_markdown()
    assert document.startswith("# Evaluation: espcn-x3, x3\n")
    assert "`scripts/evaluate.py --model checkpoints/espcn-x3 --scale 3`" in document
    assert "Total time 77.6 s on cpu (torch 2.13.0+cpu)." in document
    assert report.flat_metrics("espcn-x3") == {  # a line of training's metrics.jsonl
        "set5_psnr": 32.564858567142224,
        "set5_ssim": 0.9066642794450896,
        "set5_images": 5,
    }


def test_cli_writes_the_report(tmp_path):
    model_dir = tmp_path / "espcn-tiny-x2"
    tiny_model(2).save_pretrained(model_dir)
    out, root = tmp_path / "out", tmp_path / "data"
    shutil.copytree(FIXTURES / "tiny_set", root / "tiny_set")
    (root / "other").mkdir()
    shutil.copy(FIXTURES / "tiny_set" / "rings.png", root / "other" / "a_rings.png")
    argv = ["--model", str(model_dir), "--scale", "2", "--sets", "tiny_set", "other", "--data-dir", str(root)]
    argv += ["--out", str(out), "--peers"]
    assert load_evaluate_script().main(argv) == 0
    report = EvalReport.from_json(out / "eval_espcn-tiny-x2_x2.json")
    assert report.name == "espcn-tiny-x2" and report.scale == 2 and report.model == str(model_dir)
    assert report.methods == ["bicubic", "espcn-tiny-x2"]
    assert "--sets tiny_set other" in report.command
    assert report.sets == ["tiny_set", "other"]
    for method in report.methods:
        scores = report.scores("tiny_set", method)
        assert all(math.isfinite(v) for v in (scores.psnr_y, scores.ssim_y, scores.psnr_rgb))
    assert report.environment["device"] == "cpu" and "torch" in report.environment
    assert (out / "eval_espcn-tiny-x2_x2.md").read_text() == report.to_markdown()
    assert (out / "eval_espcn-tiny-x2_x2.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_cli_rejects_a_bad_tile_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_evaluate_script().main(["--tile-size", "big"])
    assert exit_info.value.code == 2
    assert "--tile-size" in capsys.readouterr().err


def _peers_only_argv(out: Path, peers_dir: Path) -> list[str]:
    """scripts/evaluate.py on the tiny fixture set: bicubic and OpenCV's ESPCN from `peers_dir`, no picture."""
    argv = ["--model", "bicubic-only", "--scale", "3", "--sets", "tiny_set", "--data-dir", str(FIXTURES)]
    return argv + [
        "--out",
        str(out),
        "--peers",
        "opencv-espcn",
        "--no-picture",
        "--peers-dir",
        str(peers_dir),
    ]


def test_cli_bicubic_only_with_opencv_peer(tmp_path, data_dir):
    script = load_evaluate_script()
    if not (data_dir / "peers" / "opencv_espcn" / "ESPCN_x3.pb").is_file():
        pytest.skip("OpenCV peer models not found under the data dir")
    out = tmp_path / "out"
    argv = _peers_only_argv(out, data_dir / "peers")
    assert script.main(argv) == 0
    report = EvalReport.from_json(out / "eval_peers_x3.json")
    assert report.name == "peers" and report.methods == ["bicubic", "opencv-espcn"]
    assert math.isfinite(report.results["tiny_set"]["opencv-espcn"].psnr_y)


def test_an_unreadable_peer_model_is_one_warning_and_left_out(tmp_path, capsys):
    """A peer model that the installed OpenCV cannot read (OpenCV 5.1 reads no dnn_superres .pb) leaves that
    peer out of the run with one warning line; bicubic and the protocol numbers are unaffected."""
    pytest.importorskip("cv2")
    peers = tmp_path / "peers" / "opencv_espcn"
    peers.mkdir(parents=True)
    (peers / "ESPCN_x3.pb").write_bytes(b"not a TensorFlow graph" * 10)
    out = tmp_path / "out"
    argv = _peers_only_argv(out, tmp_path / "peers")
    assert load_evaluate_script().main(argv) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "opencv-espcn" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: opencv-espcn left out of this run: OpenCV")
    assert "Traceback" not in err
    report = EvalReport.from_json(out / "eval_peers_x3.json")
    assert report.methods == ["bicubic"]


def test_the_default_output_folder_is_untracked():
    """The README's evaluation command must not rewrite the committed results in benchmarks/."""
    script = load_evaluate_script()
    assert script.build_parser().get_default("out") == Path("runs/eval")


def test_a_failed_picture_write_keeps_the_previous_picture(tmp_path, monkeypatch):
    """Issue 10: results files and pictures are written atomically; a writer dying half-way (full disk) leaves
    the previous file in place and no partial file behind."""
    import matplotlib.figure

    from espcn_hf.visualization import save_evaluation_picture

    ds = load_benchmark("tiny_set", root=FIXTURES, scale=2)
    report = evaluate({"bicubic": bicubic_upscaler(2)}, {"tiny": ds}, 2, keep_outputs={"tiny": ["rings"]})
    target = tmp_path / "eval.png"
    target.write_bytes(b"previous picture")

    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_evaluation_picture(
            target, report, {"tiny": ds.hr[ds.names.index("rings")]}, {"tiny": "rings"}, ["bicubic"]
        )
    assert target.read_bytes() == b"previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.png"]
