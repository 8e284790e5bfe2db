"""GPU tier: the seed's Trainer scenario on CUDA, under ``%vram limit`` (the caching allocator's
cap). The allocator reserves in blocks of 2 and 20 MiB, so the model and the room are larger than
on the CPU tier (tests/test_fit_trainer.py), where the same checks run under the CPU budget."""

from __future__ import annotations

import pytest
import trainer_workload as workload

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
ROOM = 400 * 2**20


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def test_bare_fit_trains_a_trainer_on_cuda(vram):
    workload.set_up(vram, device="cuda")
    try:
        run(vram, "model = tiny_model('gpt2', width=256); data = token_data(128, 256)")
        run(vram, "trainer = make_trainer(model, data, 64)")
        workload.limit_room(vram, ROOM)
        true_size = workload.largest_fitting_divisor(vram, "model", "data", 64)
        assert 1 < true_size < 64
        result = run(vram, "%%fit\ntrainer.train()")
        assert result.success, result.error_in_exec
        fitted = result.result.data.fits[0]
        trainer = vram.user_ns["trainer"]
        assert fitted.size == true_size and fitted.effective == 64
        assert (
            trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
            == 64
        )
        assert trainer.state.global_step == trainer.args.max_steps
        for attempt in fitted.attempts:
            if attempt.outcome != "fits":
                assert attempt.left is not None and attempt.left <= 2**20, attempt
        rerun = run(vram, "%%fit\ntrainer.train()").result.data.fits[0]
        assert sum(a.outcome != "fits" for a in rerun.attempts) == 0
    finally:
        run(vram, "%vram limit off")
        for name in ("trainer", "model", "data"):
            vram.user_ns.pop(name, None)
