"""The metric cases of `fgaseg benchmark`: the streaming module beside a peer evaluate module, on the same maps."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from fgaseg_hf.benchmark_metric import measure_metric, plan_metric_cases, render_metric_markdown, summarise_metric

ORACLE = Path(__file__).resolve().parent / "oracles" / "mean_iou"


def test_peer_case_only_when_its_path_is_given():
    common = {"device": "cpu", "warmup": 1, "repeats": 1}
    assert [c["method"] for c in plan_metric_cases(common, Namespace(metric_images=3, metric_peer=None))] == [
        "streaming", "store_everything"]
    cases = plan_metric_cases(common, Namespace(metric_images=3, metric_peer=str(ORACLE)))
    assert [c["method"] for c in cases] == ["streaming", "store_everything", "peer"]
    assert {c["map_dtype"] for c in cases} == {"uint8"} and cases[-1]["peer"] == str(ORACLE)


def test_side_by_side_gives_the_same_miou_and_a_ratio():
    cases = plan_metric_cases({"device": "cpu"}, Namespace(metric_images=5, metric_peer=str(ORACLE)))
    results = [{**case, **measure_metric({**case, "batch": 2})} for case in cases]
    by_method = {c["method"]: c for c in results}
    assert by_method["streaming"]["mean_iou"] == by_method["peer"]["mean_iou"]
    assert abs(by_method["store_everything"]["mean_iou"] - by_method["peer"]["mean_iou"]) < 1e-12
    # The counts do not grow with the maps; the report names the peer by its script, not by its path.
    assert by_method["streaming"]["state_bytes_at_end"] == by_method["streaming"]["state_bytes_after_first_batch"]
    assert by_method["peer"]["peer"].startswith("mean_iou (script sha256 ")
    summary = summarise_metric(results)
    ratio = summary["metric: peer / streaming time (speed-up)"]
    assert ratio == by_method["peer"]["seconds"] / by_method["streaming"]["seconds"]
    assert summary["metric: same mIoU as the peer"] is True
    lines = render_metric_markdown(results)
    assert any(line.startswith("| peer | 5 | 150 | uint8 |") for line in lines)
