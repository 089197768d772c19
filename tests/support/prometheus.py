"""A server's metrics port, parsed with prometheus_client's own parser."""
import requests
from prometheus_client.parser import text_string_to_metric_families


def metrics(server, model="svd_xt"):
    """{(sample name, frozenset of extra labels): value} for `model`'s samples on the metrics port."""
    text = requests.get(f"http://localhost:{server.options.metrics_port}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == model:
                labels = frozenset((k, v) for k, v in sample.labels.items() if k not in ("model", "version"))
                found[(sample.name, labels)] = sample.value
    return found
