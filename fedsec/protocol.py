"""Names both ends of a fedsec federation agree on (record keys of Flower messages, config keys).

Pure constants: the server's strategies (``strategies``) and the client adapter
(``clients.adapter``) read and write Flower records under these keys, and
neither imports the other.
"""

from __future__ import annotations

#: ``ArrayRecord`` key of the model (or gradient) in train/evaluate messages and replies.
ARRAYS_KEY = "arrays"
#: ``ConfigRecord`` key of the config in train/evaluate messages.
CONFIG_KEY = "config"
#: ``MetricRecord`` key of the metrics in replies.
METRICS_KEY = "metrics"
#: Metric every reply carries: the examples behind it (Flower's FedAvg weights by it).
NUM_EXAMPLES_KEY = "num-examples"
#: Metric every fedsec reply carries: the client's partition (its label in the records).
PARTITION_KEY = "partition-id"
#: Config key of the server's query for a node's partition id, and its value.
QUERY_KEY = "fedsec-query"
PARTITION_QUERY = "partition-id"
#: Train-config key carrying the round number (seeds the clients' local shuffling).
ROUND_KEY = "server-round"
#: Metric every fedsec train reply carries: the seconds its client spent in ``fit`` (the records sum it).
FIT_SECONDS_KEY = "fit-seconds"
#: Metric a DP-SGD client reports with every update: the ε spent so far (the server records the largest).
EPSILON_KEY = "dp-epsilon"
