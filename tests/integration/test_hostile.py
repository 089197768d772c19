"""Every hostile input over HTTP and gRPC: a clear refusal naming the input, nothing leaked, the
server still ready, and a valid request right after served."""
import pytest
from tritonclient.utils import InferenceServerException

from tests.support.hostile import CASES, VALID, leaks
from tests.support.kserve import client, infer, video_bytes


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_refused_cleanly(triton, protocol, case):
    tensors, field = CASES[case]
    with pytest.raises(InferenceServerException) as caught:
        infer(triton, protocol, tensors)
    status, message = str(caught.value.status()), caught.value.message()
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), (status, message)
    assert field in message, message
    assert not leaks(message), message
    assert client(triton, protocol).is_server_ready()
    assert video_bytes(infer(triton, protocol, VALID))


def test_the_matrix_has_at_least_30_distinct_cases():
    assert len(CASES) >= 30
