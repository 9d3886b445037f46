import os


def test_unmarked():
    print("VISIBLE", os.environ.get("NEURON_RT_VISIBLE_CORES"))
