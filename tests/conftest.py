"""Shared fixtures: the array-namespace fixture ``xp``, hypothesis profiles, markers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _numpy() -> Any:
    from array_api_compat import array_namespace

    return array_namespace(np.empty(0))


def _strict(strictest: bool) -> Any:
    array_api_strict = pytest.importorskip("array_api_strict")
    if strictest:
        array_api_strict.set_array_api_strict_flags(
            boolean_indexing=False, data_dependent_shapes=False, enabled_extensions=()
        )
    else:
        array_api_strict.reset_array_api_strict_flags()
    return array_api_strict


def _torch() -> Any:
    pytest.importorskip("torch")
    import torch
    from array_api_compat import array_namespace

    return array_namespace(torch.empty(0))


def _jax() -> Any:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jnp


def _cupy() -> Any:
    cupy = pytest.importorskip("cupy")
    from array_api_compat import array_namespace

    return array_namespace(cupy.empty(0))


XP_BACKENDS: dict[str, Callable[[], Any]] = {
    "numpy": _numpy,
    "array_api_strict": lambda: _strict(False),
    "array_api_strict_strictest": lambda: _strict(True),
    "torch": _torch,
    "jax.numpy": _jax,
    "cupy": _cupy,
}


@pytest.fixture(params=list(XP_BACKENDS))
def xp(request: pytest.FixtureRequest) -> Any:
    """Each array namespace the core must support (skipped where not installed)."""
    namespace = XP_BACKENDS[request.param]()
    yield namespace
    if request.param.startswith("array_api_strict"):
        import array_api_strict

        array_api_strict.reset_array_api_strict_flags()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu``-marked tests where CUDA is not available, saying so."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def exact_float32() -> Any:
    """Full float32 arithmetic on CUDA (no TF32, deterministic cuDNN) while a test compares two
    paths; restored afterwards. Inert where CUDA is not available (the ``gpu`` marker skips)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           torch.backends.cudnn.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic) = old
