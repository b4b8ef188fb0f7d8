"""FastLogAD's label-free warning that a trained model separates nothing (train prints it)."""

from __future__ import annotations

from otel_logbert.models.fastlogad import separation_warning


def test_fastlogad_warns_when_its_separation_phase_separated_nothing():
    """The last epoch's norms: 0.83 / 0.88 was the collapsed 20-session HDFS draw (AUROC 0.59), 0.79 / 0.98
    a draw that worked (0.997); epochs without a separation phase carry no norms and give no warning."""
    collapsed = [{"epoch": 1, "gen_mlm": 2.9}, {"epoch": 2, "normal_norm": 0.829, "anomaly_norm": 0.875}]
    message = separation_warning(collapsed)
    assert message is not None and "0.875" in message and "0.829" in message and "--seed" in message
    assert separation_warning([{"normal_norm": 0.786, "anomaly_norm": 0.981}]) is None
    assert separation_warning([{"epoch": 1, "rtd": 0.6}]) is None and separation_warning([]) is None
