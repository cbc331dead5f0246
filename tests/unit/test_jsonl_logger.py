"""metrics.jsonl on resume: lines past the checkpoint dropped, a last line cut by a kill dropped with a
warning, a corrupt line elsewhere refused with its number."""

import json

import pytest

from rlhf.logging import JsonlLogger


def test_a_cut_last_line_is_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "loss": 0.2}\n{"step": 4, "lo')
    with caplog.at_level("WARNING", logger="rlhf.logging"):
        logger = JsonlLogger(path, truncate_after=3)
    logger.log({"loss": 0.1}, 4)
    logger.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
    assert "dropped its last line, cut off when the run was killed" in caplog.text
    JsonlLogger(path, truncate_after=2).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_corrupt_line_before_the_last_is_refused(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not JSON"):
        JsonlLogger(path, truncate_after=2)
