import os


def pytest_configure(config):
    # the hack pytest-neuron replaces: worker gwN gets core N
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    os.environ["NEURON_RT_VISIBLE_CORES"] = worker[2:]
