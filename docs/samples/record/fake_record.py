"""Write the holder records a SIGKILLed process in a container named container-a would leave."""

import os
import time
from pathlib import Path

from pytest_neuron.locks.holders import Holder, encode_holder

holders = Path("locks4/holders")
holders.mkdir(parents=True, exist_ok=True)
os.makedirs("locks4/cores", exist_ok=True)
record = Holder(
    pid=999999,
    starttime=None,
    host="container-a",
    user="ci",
    command="pytest -n 2",
    since=time.time() - 60,
    lease_id="0123456789abcdef",
    cores=(0, 1),
    physical=(0, 1),
    worker="gw0",
)
(holders / f"{record.lease_id}.json").write_bytes(encode_holder(record))  # one record per lease
