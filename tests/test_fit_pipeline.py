"""Shell tier, real transformers: ``%%fit`` sizes the ``batch_size`` of a pipeline call.

A tiny BERT classifier and a tiny GPT-2 are built from configs and a word-level tokenizer in code
(nothing is downloaded). Under a ``%vram limit`` where batch 256 runs out of memory, a %%fit cell
calling the pipeline at 256 must run at a smaller batch that fits, leave nothing behind after
each OOM, and give what a batch-1 run gives: a batch changes how many inputs go through the model
at once, never what comes out for each. Streaming inputs and batch 1 are left alone.
"""

import contextlib
import random

import pytest
from trainer_workload import limit_room

from vram_magic.actions import fit as fit_module
from vram_magic.actions.fit import Setting, torch_meter

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = [f"w{i}" for i in range(60)]
VOCAB = {token: index for index, token in enumerate([*SPECIAL, *WORDS])}
# Room above the weights, measured: a call needs about 43 KB an item of its batch (classify)
# and 68 KB (generate), 11 MB and 17 MB at 256; so these rooms fit about 90 and 115.
ROOM = {"classify": 4 * 10**6, "generate": 8 * 10**6}
GREEDY = {
    "do_sample": False,
    "max_new_tokens": 5,
    # the random model generates special tokens too, which the texts skip: a [PAD] at batch 1
    # and a [CLS] in a batch would read the same
    "suppress_tokens": list(range(len(SPECIAL))),
}


def tokenizer(**extra):
    """A word-level tokenizer made in code, with BERT's special tokens."""
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(VOCAB, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        **extra,
    )


def texts(count, longest, seed=0):
    """Texts of 2 to ``longest`` words, so batches pad to different lengths."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, longest))) for _ in range(count)]


def classifier():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    # eval(): from_pretrained leaves a model in eval mode, a pipeline does not set it; from a
    # config it trains, and dropout would make every run differ
    model = transformers.BertForSequenceClassification(config).eval()
    return transformers.pipeline(
        "text-classification", model=model, tokenizer=tokenizer(), device="cpu"
    )


def generator(**extra):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=len(VOCAB),
        n_positions=64,
        bos_token_id=VOCAB["[CLS]"],
        eos_token_id=VOCAB["[SEP]"],
        pad_token_id=VOCAB["[PAD]"],
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    return transformers.pipeline(
        "text-generation",
        model=model,
        tokenizer=tokenizer(padding_side="left"),
        device="cpu",
        **extra,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and while another process keeps a core busy each
    threaded op waits for it: a batch-1 run took 2-16 s on 2 threads, 0.5 s on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_cached_sizes(monkeypatch):
    """Sizes are cached by call and room, and every room here is in the smallest bucket: a size
    another test of the session fitted would be where an attempt starts."""
    monkeypatch.setattr(fit_module, "_cache", {})


@contextlib.contextmanager
def in_shell(shell, room, **names):
    """``names`` bound in the shell, under a limit ``room`` bytes above what is alive (the
    weights count); afterwards the limit and every name bound are gone: the shell is shared."""
    shell.user_ns.update(names)
    try:
        limit_room(shell, room)
        yield
    finally:
        shell.run_cell("%vram limit off")
        for name in [*names, "out"]:
            shell.user_ns.pop(name, None)


def fit(shell, cell):
    """Run ``cell`` under %%fit; the CellFit, after checking it left no tensor bytes behind."""
    meter = torch_meter()
    used = meter.in_use()
    result = shell.run_cell(f"%%fit\n{cell}", store_history=True)
    assert result.success, result.error_in_exec
    assert meter.in_use() - used <= 64 * 1024
    return result


def check_sized(fitted, name):
    """Batch 256 ran out of memory, a smaller batch ran, and every OOM was cleaned up."""
    ooms = [a for a in fitted.attempts if a.outcome != "fits"]
    assert fitted.attempts[0].size == 256 and ooms and fitted.size < 256, fitted.attempts
    for attempt in ooms:
        assert attempt.left is not None and attempt.left <= 64 * 1024, attempt
    assert fitted.sized == f"{name}(...)"
    assert fitted.settings == (Setting(f"batch_size of {name}(...)", fitted.size),)


def assert_same_classes(out, expected):
    assert [o["label"] for o in out] == [e["label"] for e in expected]
    assert [o["score"] for o in out] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_text_classification_runs_at_a_batch_that_fits(vram):
    """The cell and its Python twin each run out at 256 and land below it, giving batch 1's
    labels and scores."""
    import vram_magic

    classify, batch = classifier(), texts(300, 40)
    expected = classify(batch, batch_size=1)  # outside the limit: fast, and warms the model up
    with in_shell(vram, ROOM["classify"], classify=classify, texts=batch):
        result = fit(vram, "out = classify(texts, batch_size=256)")
        (fitted,) = result.result.data.fits
        check_sized(fitted, "classify")
        assert_same_classes(vram.user_ns["out"], expected)

        out, twin = vram_magic.fit(classify, batch, batch_size=256)
        check_sized(twin, "classify")
        assert_same_classes(out, expected)


def test_text_generation_runs_at_a_batch_that_fits(vram):
    """The batch size set when the pipeline was made is sized as well. Left padding must not
    change greedy tokens: the mask hides the pads and positions count from the first real one."""
    generate, prompts = generator(batch_size=256), texts(300, 20, seed=1)
    expected = generate(prompts, batch_size=1, **GREEDY)
    added = {e[0]["generated_text"][len(p) :] for e, p in zip(expected, prompts, strict=True)}
    assert len(added) > 50  # prompts are continued differently: equal outputs mean something
    with in_shell(vram, ROOM["generate"], generate=generate, prompts=prompts, greedy=GREEDY):
        result = fit(vram, "out = generate(prompts, **greedy)")
        (fitted,) = result.result.data.fits
        check_sized(fitted, "generate")
        assert vram.user_ns["out"] == expected


@pytest.mark.parametrize(
    "cell",
    [
        "out = list(classify((text for text in texts), batch_size=256))",
        "out = classify(texts, batch_size=1)",
    ],
    ids=["streaming", "batch-1"],
)
def test_streaming_and_batch_one_are_left_alone(vram, cell):
    """A stream's batches run after the call has returned, and batch 1 has nothing to shrink:
    neither is sized, and the cell says so."""
    classify, batch = classifier(), texts(20, 40)
    expected = classify(batch, batch_size=1)
    with in_shell(vram, ROOM["classify"], classify=classify, texts=batch):
        result = fit(vram, cell)
        assert result.result.data.fits == ()
        assert "nothing to size" in result.result.text
        assert_same_classes(vram.user_ns["out"], expected)
