"""A small vision transformer for 28x28 grey images (Fashion-MNIST), written so its ONNX export
has plain patterns the converter recognises (the attention as Q K^T * scale -> Softmax -> @ V).

  patch embedding  Conv 4x4 stride 4: 28x28 -> 7x7 = 49 tokens of `dim` channels
  positions        a learned embedding per patch position, plus a learned embedding per frame
  blocks           `depth` pre-LayerNorm blocks: x + Attention(LN(x)), x + MLP(LN(x)), MLP with GELU
  head             LayerNorm, mean over all tokens (no class token), Linear to the classes

Frames: the input is (B, T, 28, 28), T frames of one item as the channel axis (T = 1 is the usual
(B, 1, 28, 28) image, so a one-frame model reads the same inputs as the project's CNNs). Every
frame goes through the same patch embedding; the T*49 tokens form one sequence, each token
carrying its patch position's embedding (shared across frames) plus its frame's. T is fixed when
the model is built (at most MAX_FRAMES).

The attention is written by hand rather than with nn.MultiheadAttention or
F.scaled_dot_product_attention: q, k and v come from one Linear, reshaped to (B, heads, N, d), and
softmax(q @ k^T * scale) @ v exports as MatMul, Mul, Softmax, MatMul (converters/attention_fusion.py).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGE = 28
PATCH = 4
TOKENS = (IMAGE // PATCH) ** 2     # 49 per frame
MAX_FRAMES = 4
NUM_CLASSES = 10


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, dim) tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, dim = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                          # each (B, heads, N, d)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
        y = scores.softmax(dim=-1) @ v                   # (B, heads, N, d)
        return self.proj(y.transpose(1, 2).reshape(b, n, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FashionViT(nn.Module):
    def __init__(self, frames: int = 1, dim: int = 96, depth: int = 6, heads: int = 3, mlp_ratio: int = 2,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"frames must be 1 to {MAX_FRAMES}, got {frames}")
        self.frames, self.dim = frames, dim
        self.patch = nn.Conv2d(1, dim, PATCH, PATCH)
        self.pos = nn.Parameter(torch.zeros(1, 1, TOKENS, dim))
        self.frame = nn.Parameter(torch.zeros(1, MAX_FRAMES, 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.frame, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """x: (B, T, 28, 28) -> logits (B, classes)."""
        t, dim = self.frames, self.dim
        x = self.patch(x.reshape(-1, 1, IMAGE, IMAGE))              # (B*T, dim, 7, 7)
        x = x.flatten(2).transpose(1, 2).reshape(-1, t, TOKENS, dim)
        x = x + self.pos + self.frame[:, :t]                        # constants: folded at export
        x = self.blocks(x.reshape(-1, t * TOKENS, dim))
        return self.head(self.norm(x).mean(dim=1))


def export(model: nn.Module, path, opset: int = 17) -> Path:
    """ONNX export (TorchScript exporter): input "input" (N, T, 28, 28) with a dynamic batch dim,
    output "logits"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    torch.onnx.export(model, torch.zeros(1, model.frames, IMAGE, IMAGE), str(path),
                      opset_version=opset, dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path
