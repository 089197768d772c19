"""svd_triton_backend: everything the model repository's models share that needs Triton's Python backend.

Imported only inside Triton's stub (it needs triton_python_backend_utils), never by the engine:
the model skeletons (skeleton: one engine per model; chain: BLS chains), the one-final-reply
bookkeeping (replies), the error map (errors), custom metrics (metrics), config.pbtxt checks and the
contract's inputs (model_config), the stub's set-up (stub_process), and the workarounds for the Triton
releases we run (compat).
"""
