"""%vram estimate: counted on the meta device, checked against real loads of tiny models.

Each model is saved to a folder, estimated from that folder, then really loaded by transformers
in float32, bfloat16, and through bitsandbytes in int8 and nf4 (bitsandbytes quantizes on CPU).
The estimate must be within 1% of the loaded model's memory: ``get_memory_footprint()`` plus
the quantization constants it leaves out.

The traced peak of a step must be within 5% of two real steps of the same model (torch, peft,
bitsandbytes), counted by torch's profiler (tests/measured_peak.py), in every train mode and
dtype, with gradient checkpointing, and for each family of models notebooks fine-tune.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("bitsandbytes")
pytest.importorskip("accelerate")

from measured_peak import measured_peak, real_step  # noqa: E402

from vram_magic.actions.estimate import EstimateError, estimate  # noqa: E402
from vram_magic.actions.step_setup import TRAIN_MODES  # noqa: E402

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


# The traced peak against real steps, counted by torch's profiler (tests/measured_peak.py).

# A size where a step's peak is in its backward pass, as in real training: bitsandbytes' CPU
# 8-bit step dequantizes its state into float32 temporaries that its fused CUDA kernel (which the
# trace follows) does not make; at 2 x 32 tokens they would be the tiny model's peak.
BATCH, SEQ = 2, 64


def tiny_gpt2():
    return transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64,
        architectures=["GPT2LMHeadModel"],
    )  # fmt: skip


def tiny_llama():
    return transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=500, max_position_embeddings=64,
        architectures=["LlamaForCausalLM"],
    )  # fmt: skip


def assert_close(predicted: int, measured: int) -> None:
    assert abs(predicted / measured - 1) <= 0.05, (predicted, measured, predicted / measured)


@pytest.mark.parametrize("train", TRAIN_MODES)
def test_peak_of_each_train_mode_is_a_real_steps(train):
    result = estimate(tiny_llama(), batch=BATCH, seq=SEQ, train=train)
    assert result.traced, result.note
    assert_close(result.peak, measured_peak(tiny_llama(), train, BATCH, SEQ))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_peak_in_each_dtype_is_a_real_steps(dtype):
    result = estimate(tiny_gpt2(), batch=BATCH, seq=SEQ, train="adamw", dtype=dtype)
    assert result.traced and result.dtype == dtype
    assert_close(result.peak, measured_peak(tiny_gpt2(), "adamw", BATCH, SEQ, dtype=dtype))


LAYERS = dict(num_hidden_layers=2, num_attention_heads=4, vocab_size=500)
DECODER = dict(hidden_size=64, intermediate_size=128, max_position_embeddings=128, **LAYERS)
FAMILIES = {  # what notebooks fine-tune, beside the GPT-2 and Llama above: tiny configs
    "Mistral": lambda: transformers.MistralConfig(
        num_key_value_heads=2, eos_token_id=2, architectures=["MistralForCausalLM"], **DECODER
    ),
    "Qwen2": lambda: transformers.Qwen2Config(
        num_key_value_heads=2, architectures=["Qwen2ForCausalLM"], **DECODER
    ),
    "Qwen3": lambda: transformers.Qwen3Config(
        num_key_value_heads=2, head_dim=16, architectures=["Qwen3ForCausalLM"], **DECODER
    ),
    "Phi-3": lambda: transformers.Phi3Config(
        num_key_value_heads=2, pad_token_id=0, architectures=["Phi3ForCausalLM"], **DECODER
    ),
    "Gemma 2": lambda: transformers.Gemma2Config(
        num_key_value_heads=2, head_dim=16, architectures=["Gemma2ForCausalLM"], **DECODER
    ),
    "Gemma 3": lambda: transformers.Gemma3TextConfig(
        num_key_value_heads=2, head_dim=16, architectures=["Gemma3ForCausalLM"], **DECODER
    ),
    "GPT-NeoX": lambda: transformers.GPTNeoXConfig(
        architectures=["GPTNeoXForCausalLM"], **DECODER
    ),
    "OPT": lambda: transformers.OPTConfig(
        hidden_size=64, ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=128,
        architectures=["OPTForCausalLM"], **LAYERS,
    ),
    "Falcon": lambda: transformers.FalconConfig(
        hidden_size=64, architectures=["FalconForCausalLM"], **LAYERS
    ),
    "DistilBERT": lambda: transformers.DistilBertConfig(
        dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=500,
        architectures=["DistilBertForMaskedLM"],
    ),
    "BART": lambda: transformers.BartConfig(
        d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        vocab_size=500, max_position_embeddings=128,
        architectures=["BartForConditionalGeneration"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_the_families_notebooks_fine_tune_trace_to_a_real_step(family):
    result = estimate(FAMILIES[family](), batch=BATCH, seq=SEQ, train="adam")
    assert result.traced, result.note
    assert_close(result.peak, measured_peak(FAMILIES[family](), "adam", BATCH, SEQ))


@pytest.mark.parametrize(
    "config, targets, words",
    [
        (tiny_llama, ("q_proj", "v_proj"), "LoRA adapters on q_proj, v_proj (peft's defaults)"),
        (FAMILIES["Phi-3"], ("all-linear",), "LoRA adapters on every linear layer"),
    ],
)
def test_the_estimate_says_which_modules_lora_adapts(config, targets, words):
    from vram_magic.render.estimate import estimate_view

    result = estimate(config(), batch=BATCH, seq=SEQ, train="lora")
    assert result.traced and result.lora_targets == targets
    assert words in estimate_view(result).text
    assert estimate(config(), batch=BATCH, seq=SEQ, train="adam").lora_targets == ()


def test_checkpointing_keeps_fewer_activations_and_is_a_real_checkpointed_run():
    plain = estimate(tiny_gpt2(), batch=BATCH, seq=SEQ, train="adam")
    checkpointed = estimate(tiny_gpt2(), batch=BATCH, seq=SEQ, train="adam", checkpointing=True)
    assert checkpointed.traced and checkpointed.checkpointing
    assert checkpointed.peak_parts["activations"] < plain.peak_parts["activations"]
    measured = measured_peak(tiny_gpt2(), "adam", BATCH, SEQ, checkpointing=True)
    assert_close(checkpointed.peak, measured)
    assert measured < measured_peak(tiny_gpt2(), "adam", BATCH, SEQ)


def test_peak_parts_add_up_and_are_what_they_say():
    model = real_step(tiny_llama(), "adam", 1, 1).model
    parameters = list(model.parameters())
    weights = sum(t.numel() * t.element_size() for t in [*parameters, *model.buffers()])
    adam = estimate(tiny_llama(), batch=BATCH, seq=SEQ, train="adam")
    assert sum(adam.peak_parts.values()) == adam.peak
    assert adam.peak_parts["weights"] == weights
    # two float32 moments a parameter, and its step count (a float32 scalar)
    moments = 2 * sum(4 * p.numel() for p in parameters)
    assert adam.peak_parts["optimizer"] == moments + 4 * len(parameters)
    assert adam.peak_parts["activations"] > 0
    inference = estimate(tiny_llama(), batch=BATCH, seq=SEQ, train="none")
    assert sum(inference.peak_parts.values()) == inference.peak
    assert inference.peak_parts["weights"] == weights
    assert inference.peak_parts["gradients"] == inference.peak_parts["optimizer"] == 0
    assert inference.peak_parts["activations"] == 0  # nothing saved for a backward pass


@pytest.mark.parametrize(
    "options, words",
    [
        ({"batch": 0}, "--batch must be at least 1, not 0"),
        ({"seq": 65}, "--seq 65 is above the 64 positions this model holds"),
        ({"train": "lion"}, "--train must be one of adam, "),
        ({"dtype": "float8"}, "--dtype must be one of float32, "),
    ],
)
def test_bad_input_in_one_line(options, words):
    with pytest.raises(EstimateError) as error:
        estimate(tiny_gpt2(), **options)
    assert words in str(error.value) and "\n" not in str(error.value)


UNTRACEABLE = {  # a module without a config, and an audio model (no token ids or images)
    "plain torch module": (
        lambda: torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Linear(32, 4)),
        "no transformers config",
    ),
    "wav2vec2 config": (
        lambda: transformers.Wav2Vec2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            vocab_size=32, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
        ),
        "could not be traced",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(UNTRACEABLE))
def test_a_model_that_cannot_be_traced_falls_back_to_the_formula(name):
    make, why = UNTRACEABLE[name]
    result = estimate(make(), batch=BATCH, seq=16, train="adam")
    assert not result.traced and why in result.note and "\n" not in result.note
    # weights, a float32 gradient and two float32 Adam moments a parameter; no activations
    extra = {"gradients": 4 * result.params, "optimizer": 8 * result.params, "activations": 0}
    assert result.peak_parts == {"weights": result.weights["float32"], **extra, "other": 0}
    assert result.peak == result.weights["float32"] + 12 * result.params
    assert result.largest_batch == {} and result.per_item is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("train", ["adam", "none", "lora"])
def test_on_cuda_the_peak_is_within_ten_percent_of_max_memory_allocated(train):
    """On a GPU the trace assumes CUDA's foreach optimizers; allocator rounding and cuBLAS's
    workspace come on top of what it counts. Llama: no attention dropout (see the README)."""
    config = tiny_llama()
    result = estimate(config, batch=8, seq=SEQ, train=train)
    measured = measured_peak(config, train, 8, SEQ, device="cuda")
    assert abs(result.peak / measured - 1) <= 0.10, (result.peak, measured)
