"""A tritonserver (CPU config, tiny model) with its own keep-warm window, and its metrics, parsed."""
import contextlib

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import TOKEN, on_free_ports


@contextlib.contextmanager
def keep_warm_server(seconds, **options):
    """A server whose model releases its weights after `seconds` idle ($SVD_KEEP_WARM_SECONDS)."""
    import pytest

    from svd_triton.launcher import TritonServer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SVD_KEEP_WARM_SECONDS", str(seconds))
        server = TritonServer(on_free_ports(token=TOKEN, **options), ready_timeout=240).start()
    try:
        yield server
    finally:
        server.stop()


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


def model_state(server):
    """warm / cold / starting, from the svd_model_state gauges."""
    values = metrics(server)
    [state] = [dict(labels)["state"] for (name, labels), value in values.items() if name == "svd_model_state" and value == 1]
    return state


def gauge(server, name):
    return metrics(server)[(name, frozenset())]
