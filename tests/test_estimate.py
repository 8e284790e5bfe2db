"""%vram estimate: counted on the meta device, checked against real loads of tiny models.

Each model is saved to a folder, estimated from that folder, then really loaded by transformers
in float32, bfloat16, and through bitsandbytes in int8 and nf4 (bitsandbytes quantizes on CPU).
The estimate must be within 1% of the loaded model's memory: ``get_memory_footprint()`` plus
the quantization constants it leaves out.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("bitsandbytes")
pytest.importorskip("accelerate")

from vram_magic.actions.estimate import EstimateError, estimate  # noqa: E402

MODELS = {
    "gpt2, tied head": lambda: transformers.GPT2Config(
        n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=128
    ),
    "llama, untied head": lambda: transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        tie_word_embeddings=False,
    ),
}


def constants(model) -> int:
    """Bytes bitsandbytes keeps beside the quantized weights: int8 row scales, nf4 absmax."""
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        scale = getattr(weight, "SCB", None)
        state = getattr(weight, "quant_state", None)
        if scale is not None:
            total += scale.numel() * scale.element_size()
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


@pytest.fixture(scope="module", params=list(MODELS))
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    config = MODELS[request.param]()
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def loaded(folder, dtype: str):
    load = transformers.AutoModelForCausalLM.from_pretrained
    if dtype == "float32":
        return load(folder, dtype=torch.float32)
    if dtype == "bfloat16":
        return load(folder, dtype=torch.bfloat16)
    quantization = (
        transformers.BitsAndBytesConfig(load_in_8bit=True)
        if dtype == "int8"
        else transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    )
    return load(folder, quantization_config=quantization, device_map="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "nf4"])
def test_weights_within_one_percent_of_a_real_load(saved, dtype):
    predicted = estimate(str(saved)).weights[dtype]
    model = loaded(saved, dtype)
    real = model.get_memory_footprint() + constants(model)
    assert abs(predicted - real) <= 0.01 * real, (dtype, predicted, real)


def test_parameters_counted_exactly_and_tied_once(saved):
    model = transformers.AutoModelForCausalLM.from_pretrained(saved)
    assert estimate(str(saved)).params == sum(p.numel() for p in model.parameters())
    assert estimate(model).params == estimate(model.config).params  # module, config, folder agree


def test_training_and_inference_totals():
    config = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=1000,
    )
    result = estimate(config, batch=3, seq=100, train="adam")
    assert result.kv_cache == 2 * 4 * 3 * 100 * 2 * (256 // 8) * 2  # k+v, layers, b, s, kv heads
    assert result.training >= 16 * result.params  # weights, grads, two Adam moments (fp32)
    assert result.inference == result.weights["bfloat16"] + result.kv_cache
    assert estimate(config, train="sgd").training < result.training
    assert estimate(config, train="none").training is None


def test_magic_and_bad_input(vram, tmp_path, monkeypatch):
    from IPython.core.error import UsageError

    vram.run_cell("from transformers import GPT2Config\ncfg = GPT2Config(n_layer=2)")
    view = vram.run_cell("%vram estimate cfg --batch 2 --seq 64", store_history=True).result
    assert "parameters" in view.text and "inference, nf4" in view.text and "80 GB" in view.text
    assert "Peak of one adam step at 2 x 64 tokens" in view.text and "activations" in view.text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = vram.run_cell("%vram estimate no-such-org/no-such-model").error_in_exec
    assert isinstance(error, UsageError) and "not in the Hugging Face cache" in str(error)
    assert "\n" not in str(error)
    error = vram.run_cell("%vram estimate cfg --train lion").error_in_exec
    assert isinstance(error, UsageError) and "not 'lion'" in str(error)
    with pytest.raises(EstimateError):
        estimate(42)
