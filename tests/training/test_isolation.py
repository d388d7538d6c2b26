"""Library calls leave no global state behind: torch's RNG, thread count, DDP bookkeeping."""

from __future__ import annotations

import torch

from contrastlocal.training import _distributed, finetune, pretrain_global, pretrain_local

from ._helpers import tiny_config, volumes


def test_stages_keep_the_callers_rng_and_thread_count() -> None:
    data = volumes()
    before_threads = torch.get_num_threads()
    wanted = 2 if before_threads == 1 else 1  # a count the stages must not leave behind
    cfg = tiny_config(runtime={"num_threads": wanted})
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    g = pretrain_global(data["pretrain"], cfg, iterations=1)
    pretrain_local(data["pretrain"], cfg, encoder=g.network, iterations=1)
    finetune(data["train"], data["val"], cfg, init=g.network, iterations=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == before_threads
    # and the stages' own draws do not depend on the caller's stream
    torch.manual_seed(99)
    again = pretrain_global(data["pretrain"], cfg, iterations=1)
    for key, value in g.network.state_dict().items():
        torch.testing.assert_close(again.network.state_dict()[key], value, rtol=0, atol=0)


def test_ddp_bookkeeping_is_returned_not_global() -> None:
    assert not hasattr(_distributed, "_DDP_MANAGED")
    net = torch.nn.Linear(2, 2)
    wrapped = _distributed.wrap(net, torch.device("cpu"), sync_batchnorm=False, find_unused=False)
    assert wrapped.module is net  # one process: no wrapper, nothing averaged by one
    assert wrapped.managed == frozenset()
