"""What the CUDA-graph capture (attnbench.training.graphed) does to the state around it, on any device: its warm-up
steps change the weights and the AdamW moments, and the snapshot taken before puts both back exactly, in the same
tensors (the graph holds their addresses). On a CPU host memory and device memory are one, so that the moments wait
in host memory shows on a GPU only (tests/test_memory_cuda.py: a resumed run's allocator peak is a fresh run's); the
captured steps themselves: tests/test_graphed_cuda.py."""

from __future__ import annotations

import torch

from attnbench.training.graphed import _restore, _snapshot


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _step(model, opt):
    opt.zero_grad(set_to_none=True)
    model(torch.randn(5, 8)).square().mean().backward()
    opt.step()


def test_a_resumed_optimizer_state_is_put_back_in_the_same_tensors_and_kept_on_the_host():
    model, opt = _model_and_opt()
    for _ in range(3):  # a run that has trained (or was resumed): AdamW holds moments and a step count
        _step(model, opt)
    params = list(model.parameters())
    before_w = [p.detach().clone() for p in params]
    before_s = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    tensors = {id(p): {k: v for k, v in opt.state[p].items()} for p in params}
    snap = _snapshot(params, opt)
    saved_state = snap[1]
    assert all(v.device.type == "cpu" for s in saved_state.values() for v in s.values())
    assert all(v.data_ptr() != tensors[i][k].data_ptr() for i, s in saved_state.items() for k, v in s.items())
    for _ in range(3):  # the warm-up steps
        _step(model, opt)
    assert not torch.equal(params[0], before_w[0])
    _restore(params, opt, snap)
    for p, w in zip(params, before_w):
        assert torch.equal(p, w)
        for k, v in opt.state[p].items():
            assert torch.equal(v, before_s[id(p)][k]) and v is tensors[id(p)][k]  # the same tensor, its values back


def test_a_fresh_optimizer_state_made_by_the_warm_up_is_zeroed():
    model, opt = _model_and_opt()
    params = list(model.parameters())
    before_w = [p.detach().clone() for p in params]
    snap = _snapshot(params, opt)
    assert snap[1] == {}
    for _ in range(2):
        _step(model, opt)
    _restore(params, opt, snap)
    assert all(torch.equal(p, w) for p, w in zip(params, before_w))
    assert all(not v.any() for p in params for v in opt.state[p].values())  # step 0, moments 0
