"""timm's VisionTransformer in plain torch.nn, with its module and parameter
names, so that its state_dict is a timm state_dict (timm needs torchvision,
whose wheel does not import against the CPU-only torch used here). As timm
1.0's `vision_transformer.py` builds `vit_tiny_patch16_224` (patch 16, width
192, depth 12, 3 heads, MLP ratio 4): a class token and learned position
embedding, pre-norm blocks with a fused-`qkv` `Attention`, exact GELU,
LayerNorm epsilon 1e-6, and `global_pool="token"` (or `"avg"`, which
normalises with `fc_norm` instead of `norm`)."""

import torch
from torch import nn


def layer_norm(dim):
    return nn.LayerNorm(dim, eps=1e-6)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # NCHW -> (batch, patches, dim)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, hidden):
        super().__init__()
        self.norm1, self.attn = layer_norm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = layer_norm(dim), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        img_size=224,
        patch_size=16,
        num_classes=1000,
        embed_dim=192,
        depth=12,
        num_heads=3,
        mlp_ratio=4.0,
        global_pool="token",
    ):
        super().__init__()
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        patches = (img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, embed_dim) * 0.02)
        hidden = int(embed_dim * mlp_ratio)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, hidden) for _ in range(depth)))
        # timm: `norm` before pooling the class token, `fc_norm` after averaging.
        self.norm = layer_norm(embed_dim) if global_pool == "token" else nn.Identity()
        self.fc_norm = layer_norm(embed_dim) if global_pool == "avg" else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        x = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return self.head(self.fc_norm(x))


def randomised(seed=0, **kwargs):
    """A reference ViT with random weights (LayerNorms and the class token
    included, which timm initialises to constants), in eval mode."""
    torch.manual_seed(seed)
    model = VisionTransformer(**kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        model.cls_token.normal_(0, 0.5)
    return model.eval()
