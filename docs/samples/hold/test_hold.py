import os
import time

import pytest

HOLD = float(os.environ.get("HOLD", "0"))  # seconds each test holds its cores


@pytest.mark.neuron(4)
def test_tp4():
    time.sleep(HOLD)


@pytest.mark.neuron(2)
def test_compile_and_run():
    time.sleep(HOLD)
