"""The ``biomedclip`` encoder: BiomedCLIP through open_clip, from a local folder or the model hub.

BiomedCLIP (Zhang et al., "A Multimodal Biomedical Foundation Model Trained from Fifteen Million
Image–Text Pairs", NEJM AI 2024, arXiv:2303.00915): a ViT-B/16 image tower and a PubMedBERT text tower
(context 256 tokens) trained contrastively on PMC-15M, both projected to 512-d. Model id
``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``.

Where the weights come from, in order:

1. option ``path=DIR`` (``--encoder-option path=DIR``), else the ``MEDHASH_BIOMEDCLIP_DIR`` environment
   variable: a folder holding ``open_clip_config.json``, the weights (``open_clip_pytorch_model.bin`` or
   another file open_clip's ``local-dir:`` schema accepts) and the tokenizer files (``vocab.txt``,
   ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``) — i.e. a copy of the hub
   repository, for air-gapped machines;
2. the Hugging Face cache, if the hub repository was downloaded there before;
3. the hub itself, only when ``HF_HUB_OFFLINE`` is unset and ``huggingface.co`` answers within 3 s.

Anything else raises :class:`~medhash_datasets.encoders.base.EncoderError` saying how to supply the folder; nothing
waits on an unreachable hub.

The text tower's BERT configuration is named in ``open_clip_config.json`` (``text_cfg.hf_model_name``,
a hub id such as ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``). Only its ``config.json`` is
needed (the full checkpoint holds all weights); it is looked up as: ``hf_model_name`` itself if it is a
folder (absolute, or relative to the model folder), else ``DIR/config.json`` (copy BiomedBERT's
``config.json`` there for air-gapped use), else the Hugging Face cache, else the hub (same network rule).

Outputs: ``model.encode_image``/``encode_text`` embeddings, **L2-normalised** (CLIP's cosine space), both
``embed_dim`` wide (512 for BiomedCLIP). Image preprocessing is open_clip's evaluation transform built
from the folder's ``preprocess_cfg`` (BiomedCLIP: 224 px, bicubic, shortest-side resize + centre crop,
OpenAI CLIP mean/std).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medhash_datasets.encoders.base import Encoder, EncoderError, batches, check_batch_size, load_rgb, sha256_file

HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
ENV_DIR = "MEDHASH_BIOMEDCLIP_DIR"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_HUB_FILES = [CONFIG_FILE, "open_clip_pytorch_model.bin", "*.txt", "tokenizer*.json", "special_tokens_map.json"]
_HASH_CACHE: dict[tuple[str, int, int], str] = {}

HOW_TO_SUPPLY = (
    f"To use BiomedCLIP without network: on a connected machine download the hub repository {HUB_ID} "
    "(e.g. `huggingface-cli download " + HUB_ID + " --local-dir DIR`), copy DIR to this machine (add "
    "BiomedBERT's config.json as DIR/config.json if microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract is "
    f"not in the Hugging Face cache), then pass `--encoder-option path=DIR` or set {ENV_DIR}=DIR. "
    "Or use `--encoder offline`."
)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether ``huggingface.co:443`` accepts a TCP connection within ``timeout_s`` (never when offline).

    The check (DNS look-up included, which ``socket`` timeouts do not bound) runs in a daemon thread, so an
    unresponsive resolver costs at most ``timeout_s`` seconds.
    """
    if _hub_offline():
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="hub-probe")
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def find_weight_file(folder: Path) -> Path | None:
    """The weight file open_clip's ``local-dir:`` loader will pick in ``folder`` (its preferred names first)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")])
    return found[0] if found else None


def _check_folder(folder: Path, origin: str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EncoderError(f"biomedclip: {origin} {folder} is not a folder. {HOW_TO_SUPPLY}")
    if not (folder / CONFIG_FILE).is_file():
        raise EncoderError(f"biomedclip: {folder / CONFIG_FILE} not found ({origin}). {HOW_TO_SUPPLY}")
    if find_weight_file(folder) is None:
        raise EncoderError(
            f"biomedclip: no weight file (open_clip_pytorch_model.bin, *.safetensors, ...) in {folder} ({origin}). "
            f"{HOW_TO_SUPPLY}"
        )
    return folder.resolve()


def configured_dir(path: str | Path | None = None) -> tuple[Path, str] | None:
    """The user-configured local folder: ``path`` if given, else ``$MEDHASH_BIOMEDCLIP_DIR``; ``None`` if neither."""
    if path not in (None, ""):
        return Path(str(path)).expanduser(), "option path="
    env = os.environ.get(ENV_DIR, "")
    if env:
        return Path(env).expanduser(), f"${ENV_DIR}"
    return None


def cached_hub_dir() -> Path | None:
    """The Hugging Face cache snapshot folder of :data:`HUB_ID` if config and weights are cached, else ``None``."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of open_clip
        return None
    found = try_to_load_from_cache(HUB_ID, CONFIG_FILE)
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if find_weight_file(folder) is not None else None


def biomedclip_available(path: str | Path | None = None) -> bool:
    """Whether BiomedCLIP weights are available locally (configured folder or Hugging Face cache), no network.

    Used by the ``auto`` encoder choice. A configured folder that is broken counts as available, so that
    ``auto`` then fails loudly instead of silently falling back to ``offline``.
    """
    if configured_dir(path) is not None:
        return True
    return cached_hub_dir() is not None


def resolve_model_dir(path: str | Path | None = None) -> Path:
    """Find (or, with network, download) the BiomedCLIP folder; see the module docstring for the order.

    Raises
    ------
    EncoderError
        If the configured folder is incomplete, or nothing is available locally and the hub is unreachable;
        the message says how to supply the weights.
    """
    configured = configured_dir(path)
    if configured is not None:
        return _check_folder(*configured)
    cached = cached_hub_dir()
    if cached is not None:
        return _check_folder(cached, "Hugging Face cache")
    if not _hub_reachable():
        raise EncoderError(
            f"biomedclip: no local weights (no path= option, {ENV_DIR} unset, not in the Hugging Face cache) and the "
            f"model hub is unreachable{' (HF_HUB_OFFLINE is set)' if _hub_offline() else ''}. {HOW_TO_SUPPLY}"
        )
    from huggingface_hub import snapshot_download

    try:
        return _check_folder(Path(snapshot_download(HUB_ID, allow_patterns=_HUB_FILES)), "hub download")
    except EncoderError:
        raise
    except Exception as err:  # network errors of many kinds
        raise EncoderError(f"biomedclip: download of {HUB_ID} failed ({err}). {HOW_TO_SUPPLY}") from None


def _weights_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def _text_config_source(folder: Path, hf_model_name: str) -> str:
    """Where transformers should read the text tower's BERT ``config.json`` from (see module docstring)."""
    for candidate in (Path(hf_model_name).expanduser(), folder / hf_model_name):
        if (candidate / "config.json").is_file():
            return str(candidate.resolve())
    if (folder / "config.json").is_file():
        return str(folder)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(hf_model_name, "config.json")
    except Exception:  # an hf_model_name that is not a valid repo id
        found = None
    if isinstance(found, str):
        return str(Path(found).parent)
    if _hub_reachable():
        return hf_model_name
    raise EncoderError(
        f"biomedclip: text tower config {hf_model_name!r} (text_cfg.hf_model_name in {folder / CONFIG_FILE}) is "
        f"neither a folder nor cached, {folder / 'config.json'} does not exist, and the hub is unreachable. "
        f"Copy {hf_model_name}'s config.json to {folder / 'config.json'}."
    )


class BiomedCLIPEncoder(Encoder):
    """BiomedCLIP image and text towers (open_clip), L2-normalised ``embed_dim``-d outputs.

    Parameters
    ----------
    device : str
        Torch device.
    path : str, optional
        Local model folder (overrides ``$MEDHASH_BIOMEDCLIP_DIR``).

    Raises
    ------
    EncoderError
        If no weights can be found (message says how to supply them), the folder's config is unreadable, or an
        unknown option is given.
    """

    name = "biomedclip"

    def __init__(self, *, device: str = "cpu", path: str | None = None, **options: str) -> None:
        if options:
            raise EncoderError(f"encoder 'biomedclip' takes only the option 'path', got {sorted(options)}")
        super().__init__(device=device)
        self.folder = resolve_model_dir(path)
        try:
            config = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
            model_cfg = config["model_cfg"]
            self._embed_dim = int(model_cfg["embed_dim"])
            text_cfg = dict(model_cfg["text_cfg"])
            vision_cfg = model_cfg["vision_cfg"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EncoderError(f"biomedclip: cannot read model_cfg.embed_dim/text_cfg/vision_cfg from "
                               f"{self.folder / CONFIG_FILE}: {err!r}") from None
        self._text_cfg = text_cfg
        self._context_length = int(text_cfg.get("context_length", 77))
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        pp = merge_preprocess_dict(PreprocessCfg(), config.get("preprocess_cfg", {}))
        size = vision_cfg.get("image_size", pp["size"])
        self._preprocess_id = (
            f"image:open_clip:size={size}:interp={pp['interpolation']}:resize={pp['resize_mode']}:"
            f"mean={tuple(pp['mean'])}:std={tuple(pp['std'])}|text:context={self._context_length}|l2"
        )
        weights = find_weight_file(self.folder)
        assert weights is not None  # checked by resolve_model_dir
        self.weights_file = weights
        self._model = None
        self._transform = None
        self._tokenizer = None

    @property
    def weights_id(self) -> str:
        return f"sha256:{_weights_hash(self.weights_file)}"

    @property
    def preprocess_id(self) -> str:
        return self._preprocess_id

    @property
    def image_dim(self) -> int:
        return self._embed_dim

    @property
    def text_dim(self) -> int:
        return self._embed_dim

    def _load(self):
        if self._model is not None:
            return self._model
        import open_clip

        overrides = {}
        hf_name = self._text_cfg.get("hf_model_name")
        if hf_name:
            source = _text_config_source(self.folder, hf_name)
            if source != hf_name:
                # the full checkpoint holds every text weight: build the BERT from its config only
                overrides["text_cfg"] = {**self._text_cfg, "hf_model_name": source, "hf_model_pretrained": False}
        spec = f"local-dir:{self.folder}"
        try:
            model, transform = open_clip.create_model_from_pretrained(spec, device=self.device, **overrides)
            tokenizer = open_clip.get_tokenizer(spec)
        except EncoderError:
            raise
        except Exception as err:  # open_clip/transformers raise OSError, ValueError, RuntimeError, KeyError
            raise EncoderError(f"biomedclip: cannot load the model from {self.folder}: {err}") from None
        model.eval().requires_grad_(False)
        self._model, self._transform, self._tokenizer = model, transform, tokenizer
        return model

    def encode_images(self, paths: Sequence[Path], batch_size: int) -> np.ndarray:
        """(n, embed_dim) float32 unit-norm image embeddings."""
        import torch

        batch_size = check_batch_size(batch_size)
        model = self._load()
        out = np.empty((len(paths), self._embed_dim), dtype=np.float32)
        for sl in batches(len(paths), batch_size):
            x = torch.stack([self._transform(load_rgb(p)) for p in paths[sl]]).to(self.device)
            with torch.inference_mode():
                out[sl] = model.encode_image(x, normalize=True).float().cpu().numpy()
        return out

    def encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(n, embed_dim) float32 unit-norm text embeddings (captions truncated to the context length)."""
        import torch

        batch_size = check_batch_size(batch_size)
        model = self._load()
        out = np.empty((len(texts), self._embed_dim), dtype=np.float32)
        for sl in batches(len(texts), batch_size):
            tokens = self._tokenizer(list(texts[sl])).to(self.device)
            with torch.inference_mode():
                out[sl] = model.encode_text(tokens, normalize=True).float().cpu().numpy()
        return out
