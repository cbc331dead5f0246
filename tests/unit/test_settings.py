"""The early settings check refuses what would fail later and accepts what the components handle."""

from rlhf.config import setting_problems
from rlhf.data.loading import check_json_lines


def test_ranges_follow_what_the_components_accept():
    assert setting_problems({"mode": {"window": 0}, "trainer": {"forward": {"window": 0}}}) == []  # immediate reward
    assert setting_problems({"trainer": {"log_every": 0}}) == ["trainer.log_every=0 must be >= 1"]  # step % 0
    assert setting_problems({"mode": {"window": -1}}) == ["mode.window=-1 must be >= 0"]


def test_a_jsonl_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "Q?", "chosen": "a", "rejected": "b"}\n')
    check_json_lines(path)  # no error: the BOM is not part of the first line's JSON
