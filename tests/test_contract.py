"""The thin client's contract module is the engine's tables, regenerated: never stale, never edited by hand."""
import runpy
from pathlib import Path

from svd_engine.request import FIXED_DEFAULTS, PARAMETERS as ENGINE_PARAMETERS
from svd_engine.video import VIDEO_FORMATS as ENGINE_FORMATS
from svd_triton import contract

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_the_contract_gives_the_committed_file():
    generator = runpy.run_path(str(ROOT / "scripts" / "generate_contract.py"))
    assert generator["render"]() == (ROOT / "client" / "svd_triton" / "contract.py").read_text(), \
        "client/svd_triton/contract.py is stale: run python scripts/generate_contract.py"


def test_the_contract_matches_the_engine():
    assert list(contract.PARAMETERS) == list(ENGINE_PARAMETERS)
    for name, parameter in ENGINE_PARAMETERS.items():
        mine = contract.PARAMETERS[name]
        assert (mine.kind, mine.low, mine.high, mine.choices, mine.multiple_of, mine.help) == (
            parameter.kind.__name__, parameter.low, parameter.high, tuple(parameter.choices), parameter.multiple_of,
            parameter.help)
        assert parameter.help, f"{name} has no help text (the CLI and the playground show it)"
    assert {name: p.default for name, p in contract.PARAMETERS.items() if p.default is not None} == FIXED_DEFAULTS
    assert {name: (f.extension, f.mime_type) for name, f in contract.VIDEO_FORMATS.items()} == {
        name: (f.extension, f.mime_type) for name, f in ENGINE_FORMATS.items()}


def test_the_cli_flags_come_from_the_contract():
    from svd_triton.cli import GENERATION_FLAGS

    assert set(GENERATION_FLAGS) == set(contract.PARAMETERS)


def test_control_is_not_a_generation_parameter():
    """CONTROL (keep-warm) is a request of its own: no CLI flag, no gateway body field, no contract entry."""
    from svd_triton.cli import GENERATION_FLAGS
    from svd_triton.gateway.schemas import ForgeRequest, PredictionInput, PredictRequest

    assert "control" not in contract.PARAMETERS and "control" not in GENERATION_FLAGS
    for body in (PredictRequest, ForgeRequest, PredictionInput):
        assert "control" not in body.model_fields
