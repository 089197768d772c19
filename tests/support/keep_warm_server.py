"""A tritonserver (CPU config, tiny model) with its own keep-warm window, and its keep-warm metrics."""
import contextlib

from tests.support import TOKEN, on_free_ports
from tests.support.prometheus import metrics


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


def model_state(server):
    """warm / cold / starting, from the svd_model_state gauges."""
    values = metrics(server)
    [state] = [dict(labels)["state"] for (name, labels), value in values.items() if name == "svd_model_state" and value == 1]
    return state


def gauge(server, name):
    return metrics(server)[(name, frozenset())]
