"""Exactly one final response per request, whatever fails after parsing: faults injected into a copy
of the model (building outputs, encoding, sending), in the default and the streaming (decoupled) mode."""
import concurrent.futures

import pytest

from tests.support import TOKEN, start_server, cpu_config_copy
from svd_triton import ServerError, SVDClient
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}
FAULTS = {1001: "building outputs", 1002: "encoding", 1003: "sending"}
# Appended to the copy's model.py: each fault fires for requests with its seed only.
INJECTED = '''

import svd_engine.engine
from svd_triton_backend.replies import Replies

_build_outputs, _send, _finish = TritonPythonModel.outputs, Replies.send, svd_engine.engine._Batch.finish


def _failing_outputs(self, result, wanted):
    if result.seed == 1001:
        raise RuntimeError("injected fault while building outputs")
    return _build_outputs(self, result, wanted)


TritonPythonModel.outputs = _failing_outputs


def _failing_send(self, position, tensors):
    seeds = [t.as_numpy().reshape(-1)[0] for t in tensors if t.name() == "SEED_USED"]
    if seeds == [1003]:
        raise RuntimeError("injected fault while sending")
    return _send(self, position, tensors)


Replies.send = _failing_send


def _failing_finish(self, position, frames, batch_seconds):
    if self.requests[position].seed == 1002:
        raise RuntimeError("injected fault while encoding")
    return _finish(self, position, frames, batch_seconds)


svd_engine.engine._Batch.finish = _failing_finish
'''


@pytest.fixture(scope="module", params=[False, True], ids=["default", "streaming"])
def faulty_server(request, tmp_path_factory):
    config = cpu_config_copy(tmp_path_factory.mktemp("faulty"))
    model = config.parents[1] / "1" / "model.py"
    model.write_text(model.read_text() + INJECTED)
    with start_server(model_repository=config.parents[2], stream=request.param) as server:
        yield server


def generate(server, image, seed):
    """One request on its own client (a streaming client holds one stream at a time)."""
    with SVDClient(server.grpc_url, protocol="grpc", token=TOKEN, timeout=120) as svd:
        return svd.generate(image, seed=seed, **SMALL)


@pytest.mark.parametrize("seed", sorted(FAULTS))
def test_a_fault_after_parsing_answers_once_with_internal_and_the_next_request_is_served(faulty_server, sample_png, seed):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # a faulty and a good request, likely one batch
        faulty = pool.submit(generate, faulty_server, sample_png, seed)
        good = pool.submit(generate, faulty_server, sample_png, 7)
        with pytest.raises(ServerError) as caught:
            faulty.result(timeout=120)
        assert decode_video(good.result(timeout=120).video, "mp4").num_frames == 2
    assert str(caught.value).endswith("generation failed; the server log has the details")
    assert "Traceback" not in str(caught.value) and "injected" not in str(caught.value)
    assert decode_video(generate(faulty_server, sample_png, 8).video, "mp4").num_frames == 2
    log = faulty_server.log_path.read_text()
    assert f"injected fault while {FAULTS[seed]}" in log and "Traceback" in log
