"""Our MiniLM encoder (plain torch math, exportable) equals `transformers.BertModel` on the
packaged all-MiniLM-L6-v2 weights: same tokens, same mean-pooled sentence embeddings."""

import json

import pytest
import torch

from models.minilm import load_pretrained, read_package_file

pytestmark = pytest.mark.integration


def test_encoder_matches_transformers_bert_on_the_pretrained_weights() -> None:
    transformers = pytest.importorskip("transformers")  # dev extra; a skip here is reported
    from safetensors.torch import load as load_safetensors
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(read_package_file("tokenizer.json").decode())
    tokenizer.enable_padding(length=16)
    tokenizer.enable_truncation(16)
    texts = ["turn on the lights in the kitchen", "stell einen timer auf 5 minuten", "hey"]
    ids = torch.tensor([e.ids for e in tokenizer.encode_batch(texts)])
    mask = (ids != 0).long()

    config = transformers.BertConfig(**json.loads(read_package_file("config.json")))
    reference = transformers.BertModel(config, add_pooling_layer=False).eval()
    reference.load_state_dict(
        load_safetensors(read_package_file("model.safetensors")), strict=False
    )
    ours = load_pretrained(num_classes=2).eval()
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        got = ours.embed(ids)
    assert expected.abs().max() > 0.1  # real embeddings, not zeros
    assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    # BERT's 22,713,216 less its pooler (384 * 384 + 384; sentence embeddings do not use it),
    # plus our head (384 * 2 + 2)
    assert sum(p.numel() for p in ours.parameters()) == 22_713_216 - 147_840 + 770
