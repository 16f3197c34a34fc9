"""scripts/step_timeline.py on records in the layout of timeline.cuh's TimelineRecord (no GPU): launches
grouped in step order, spans from the layer's in_proj, early placement, and the medians over layers."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
N_IN, N_OUT, N_HEAD = 100, 50, 7


def _module():
    spec = importlib.util.spec_from_file_location("step_timeline", ROOT / "scripts" / "step_timeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _step(mod, layers: int) -> np.ndarray:
    """A step whose layer l starts at 20 us * l (ns below): in_proj 3 blocks (SMs 0, 1, 2), the mixer 3
    blocks (two on SM 0, one of them placed before in_proj ended), out_proj 2 blocks, then lm_head."""
    rows = []

    def marks(start: int, *after: int) -> list[int]:  # marks `after` ns from the block's start; 0: not reached
        return [start + a for a in after] + [0] * (6 - len(after))
    for li in range(layers):
        t = 1_000_000 + 20_000 * li
        rows += [(0, b, b, N_IN, t - 2_000 + 100 * b, t + 50 * b, t + 8_000 + 200 * b,
                  marks(t - 2_000 + 100 * b, 1_000, 3_000 + 100 * b)) for b in range(3)]
        rows += [(1, 0, 0, 80, t + 7_900, t + 9_500, t + 12_000, marks(t + 7_900, 500, 900, 1_300, 2_000, 2_500)),
                 (1, 1, 0, 80, t + 8_500, t + 9_600, t + 12_500, marks(t + 8_500, 600, 1_000, 1_400, 1_500, 2_000)),
                 (1, 2, 1, 80, t + 8_600, t + 10_000, t + 13_000, marks(t + 8_600, 700, 1_100, 1_500, 2_000, 2_600))]
        rows += [(0, b, b, N_OUT, t + 11_000, t + 14_000 + 100 * b, t + 18_000 + 100 * b, marks(0))
                 for b in range(2)]
    t = 1_000_000 + 20_000 * layers
    rows.append((0, 0, 0, N_HEAD, t - 1_000, t, t + 3_000, marks(0)))
    rec = np.array(rows, dtype=mod.RECORD)
    return rec[np.random.default_rng(0).permutation(len(rec))]  # the read order is the blocks' finish order


def test_launches_group_in_step_order_with_spans_from_in_proj():
    mod = _module()
    rows = mod.layer_rows(_step(mod, 3), 3, N_IN, N_OUT, N_HEAD)
    assert rows is not None
    inp, mix, out, nxt = (rows[(1, k)] for k in ("in_proj", "mixer", "out_proj", "next"))
    assert inp["start"] == (-2.0, -1.8) and inp["wait"] == (0.0, 0.1) and inp["end"] == (8.0, 8.4)
    # layer 0's out_proj ended at 18.1 us: of in_proj's starts (18.0, 18.1, 18.2) only the first was earlier
    assert (inp["blocks"], inp["sms"], inp["most_on_one_sm"], inp["early"]) == (3, 3, 1, 1)
    assert mix["wait"] == (9.5, 10.0) and mix["end"] == (12.0, 13.0)
    assert mix["marks"] == [0.6, 1.0, 1.4, 2.0, 2.5, None]  # medians over the blocks, from each block's start
    assert mix["wait_after_start"] == pytest.approx(1.4)  # 1.6, 1.1, 1.4
    assert inp["marks"][:3] == [1.0, 3.1, None] and out["marks"] == [None] * 6
    assert (mix["blocks"], mix["sms"], mix["most_on_one_sm"], mix["early"]) == (3, 2, 2, 1)
    assert out["end"] == (18.0, 18.1) and out["early"] == 2
    assert nxt["wait"] == (20.0, 20.1)
    assert rows[(0, "in_proj")]["early"] == 0  # nothing ran ahead of the first layer
    assert rows[(2, "next")]["blocks"] == 1  # lm_head after the last layer


def test_record_layout_matches_timeline_cuh():
    """timeline.cuh static_asserts an 88-byte TimelineRecord with these fields in this order."""
    mod = _module()
    header = (ROOT / "trt_plugins" / "kernels" / "timeline.cuh").read_text()
    assert mod.RECORD.itemsize == 88 and "sizeof(TimelineRecord) == 88" in header
    assert mod.RECORD.names == ("kind", "block", "sm", "n", "start", "wait", "end", "mark")
    assert mod.RECORD["mark"].shape == (6,) and "constexpr int kTimelineMarks = 6;" in header


def test_a_replay_that_does_not_group_is_refused():
    mod = _module()
    rec = _step(mod, 3)
    assert mod.layer_rows(rec, 4, N_IN, N_OUT, N_HEAD) is None  # three layers' launches, four asked
    assert mod.layer_rows(rec[rec["n"] != N_HEAD], 3, N_IN, N_OUT, N_HEAD) is None  # no lm_head


def test_medians_over_layers_and_replays():
    mod = _module()
    replays = [mod.layer_rows(_step(mod, 4), 4, N_IN, N_OUT, N_HEAD) for _ in range(2)]
    table = mod.median_table(replays, range(1, 3))
    assert table["mixer"]["wait"] == pytest.approx([9.5, 10.0])
    assert table["out_proj"]["start"] == pytest.approx([11.0, 11.0])
    assert table["mixer"]["most_on_one_sm"] == 2 and table["in_proj"]["blocks"] == 3
    assert table["mixer"]["marks"][:2] == pytest.approx([0.6, 1.0]) and table["out_proj"]["marks"][0] is None


def test_reader_returns_each_functions_records_since_the_last_read():
    """RecordReader against a stand-in library: each read concatenates both functions' records, copied out of
    the one buffer it reuses; a count past the capacity or a failed copy is an error."""
    import ctypes

    mod = _module()
    step = _step(mod, 1)

    class Fn:
        def __init__(self, records):
            self.records, self.argtypes = records, None

        def __call__(self, dst, cap):
            n = min(len(self.records), cap)
            ctypes.memmove(dst, self.records.ctypes.data, n * mod.RECORD.itemsize)
            out = len(self.records)
            self.records = self.records[:0]  # the read clears them
            return out

    class Lib:
        qmamba_timeline_linear = Fn(step[step["kind"] == 0])
        qmamba_timeline_mixer = Fn(step[step["kind"] == 1])

    read = mod.RecordReader(Lib)
    assert Lib.qmamba_timeline_linear.argtypes is not None
    got = read()
    assert np.array_equal(np.sort(got, order=["kind", "start"]), np.sort(step, order=["kind", "start"]))
    assert len(read()) == 0
    Lib.qmamba_timeline_mixer.records = np.zeros(mod.CAPACITY + 1, mod.RECORD)
    with pytest.raises(RuntimeError, match="read after each replay"):
        read()
    Lib.qmamba_timeline_linear = lambda dst, cap: -1
    with pytest.raises(RuntimeError, match="copying the records failed"):
        mod.RecordReader(Lib)()
