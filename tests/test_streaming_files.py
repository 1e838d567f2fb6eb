"""File names of streaming outputs: one file per window and firing."""
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from transforms.sinks.json_files import pane_file_naming


def test_each_firing_of_a_window_gets_its_own_file():
    naming = pane_file_naming("DeadLetters", ".jsonl")
    win = IntervalWindow(0, 60)
    names = {naming(win, PaneInfo(i == 0, False, PaneInfoTiming.EARLY, i, -1), 0, 1, "", None) for i in range(3)}
    assert len(names) == 3
    assert "DeadLetters-1970-01-01T00:00:00-1970-01-01T00:01:00-pane1-00000-of-00001.jsonl" in names


def test_no_pane_never_overwrites():
    naming = pane_file_naming("DeadLetters", ".jsonl")
    names = {naming(IntervalWindow(0, 60), None, 0, 1, "", None) for _ in range(3)}
    assert len(names) == 3 and all(n.endswith("-00000-of-00001.jsonl") for n in names)
