"""The original TiCodec codec of VITA-1.5, re-implemented from reading upstream for parity tests.

Module layout, parameter names and arithmetic follow upstream's `vita_tts/decoder/ticodec/models.py` and `vqvae.py`,
so a state dict of these modules has the released `final.pt` key names: weight norm as `weight_g` / `weight_v`
(`torch.nn.utils.weight_norm`), the generator's transposed convs in `ups`, the encoder's GroupNorms in `normalize`, the
speaker encoder as `GlobalTokenEncoder` with its `conv` / `fn` Sequentials, the encoder's never-called `linear`, and
the quantiser's `quantizer_modules` / `quantizer_modules_globaltokens` embeddings. Upstream's rules are kept: the
speaker embedding joins after any generator stage whose channel count equals the embedding's width, the encoder
normalises the running sum of a stage's residual blocks, and its last LeakyReLU uses torch's default slope.

Upstream fixes some widths in code (512-wide codes, a 128-wide speaker, 32 encoder channels at first); here they are
read from optional `model.json`-style keys (`codebook_dim`, `speaker_width`, `encoder_initial_channel`) so that tiny
test sizes work, with upstream's numbers as defaults. Plain torch: nothing of this project's model code is used.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

# codec/model.json at tiny size (32 codes of 16 samples, 4 speaker tokens); the last three keys are widths the original
# fixes in code (512, 128, 32), given here so that `original_vita_codec.OriginalVQVAE` builds at this size.
TINY_CODEC_JSON = {
    "resblock": "1",
    "upsample_rates": [4, 4],
    "upsample_kernel_sizes": [8, 8],
    "upsample_initial_channel": 16,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 2, 1]],
    "n_code_groups": 1,
    "residul_layer": 1,
    "n_codes": 32,
    "global_code_num": 4,
    "global_feature_conv": [16, 8, 8, 3, 1],
    "global_tokens": [3, 1, 4, 1],
    "sampling_rate": 24000,
    "codebook_dim": 16,
    "speaker_width": 8,
    "encoder_initial_channel": 8,
}

SLOPE = 0.1


def _wn(module: nn.Module) -> nn.Module:
    # The old weight norm gives the `weight_g` / `weight_v` names the released checkpoint has.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


class Hyper(dict):
    """`model.json` as a dict whose keys also read as attributes (upstream's AttrDict)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def _pad(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    def __init__(self, channels, kernel, dilation):
        super().__init__()
        self.convs1 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, 1, dilation=dilation[i], padding=_pad(kernel, dilation[i])))
            for i in range(3)
        )
        self.convs2 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, 1, dilation=1, padding=_pad(kernel))) for _ in range(3)
        )

    def forward(self, x):
        for first, second in zip(self.convs1, self.convs2):
            y = first(F.leaky_relu(x, SLOPE))
            y = second(F.leaky_relu(y, SLOPE))
            x = y + x
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels, kernel, dilation):
        super().__init__()
        # Upstream reads the first two dilations only.
        self.convs = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, 1, dilation=dilation[i], padding=_pad(kernel, dilation[i])))
            for i in range(2)
        )

    def forward(self, x):
        for conv in self.convs:
            x = conv(F.leaky_relu(x, SLOPE)) + x
        return x


def _block(h):
    return ResBlock1 if h.resblock == "1" else ResBlock2


class Generator(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.num_kernels = len(h.resblock_kernel_sizes)
        self.num_upsamples = len(h.upsample_rates)
        init_ch = h.upsample_initial_channel
        self.conv_pre = _wn(nn.Conv1d(h.get("codebook_dim", 512), init_ch, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
            self.ups.append(
                _wn(nn.ConvTranspose1d(init_ch // 2**i, init_ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            )
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            ch = init_ch // 2 ** (i + 1)
            for k, d in zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes):
                self.resblocks.append(_block(h)(ch, k, d))
        self.conv_post = _wn(nn.Conv1d(ch, 1, 7, 1, padding=3))

    def forward(self, x, global_features):
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, SLOPE))
            total = None
            for j in range(self.num_kernels):
                out = self.resblocks[i * self.num_kernels + j](x)
                total = out if total is None else total + out
            x = total / self.num_kernels
            # Upstream's rule: a shape test, not a stage index.
            if x.shape[-2] == global_features.shape[-1]:
                x = x + global_features.unsqueeze(-1).repeat(1, 1, x.shape[-1])
        x = self.conv_post(F.leaky_relu(x, SLOPE))
        return torch.tanh(x)


class GlobalTokenEncoder(nn.Module):
    def __init__(self, in_ch, hidden_ch, out_ch, kernel=3, stride=1):
        super().__init__()
        pad = (kernel - stride) // 2
        self.conv = nn.Sequential(
            nn.Conv1d(in_ch, hidden_ch, kernel, stride, pad, bias=False),
            nn.LeakyReLU(SLOPE),
            nn.Conv1d(hidden_ch, hidden_ch, kernel, stride, pad, bias=False),
            nn.LeakyReLU(SLOPE),
            nn.Conv1d(hidden_ch, out_ch, kernel, stride, pad, bias=False),
            nn.LeakyReLU(SLOPE),
        )
        self.fn = nn.Sequential(nn.Linear(out_ch, out_ch), nn.LeakyReLU(SLOPE), nn.BatchNorm1d(out_ch))

    def forward(self, x):
        return self.fn(torch.mean(self.conv(x), dim=2))


class Encoder(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.num_kernels = len(h.resblock_kernel_sizes)
        self.num_upsamples = len(h.upsample_rates)
        base = h.get("encoder_initial_channel", 32)
        width = h.get("speaker_width", 128)
        self.conv_pre = _wn(nn.Conv1d(1, base, 7, 1, padding=3))
        self.normalize = nn.ModuleList()
        self.ups = nn.ModuleList()
        stages = list(reversed(list(zip(h.upsample_rates, h.upsample_kernel_sizes))))
        for i, (u, k) in enumerate(stages):
            self.ups.append(_wn(nn.Conv1d(base * 2**i, base * 2 ** (i + 1), k, u, padding=(k - u) // 2)))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base * 2 ** (i + 1)
            for k, d in zip(list(reversed(h.resblock_kernel_sizes)), list(reversed(h.resblock_dilation_sizes))):
                self.resblocks.append(_block(h)(ch, k, d))
                self.normalize.append(nn.GroupNorm(ch // 16, ch, eps=1e-6, affine=True))
        self.conv_post = nn.Conv1d(ch, h.get("codebook_dim", 512), 3, 1, padding=1)
        self.linear = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(SLOPE))  # never called, as upstream
        self.GlobalTokenEncoder = GlobalTokenEncoder(*h.global_feature_conv)

    def forward(self, x):
        x = self.conv_pre(x)
        global_features = None
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, SLOPE))
            xs = None
            for j in range(self.num_kernels):
                n = i * self.num_kernels + j
                xs = self.resblocks[n](x) if xs is None else xs + self.resblocks[n](x)
                xs = self.normalize[n](xs)
            x = xs / self.num_kernels
            if i == self.num_upsamples // 2 - 1:
                global_features = self.GlobalTokenEncoder(x)
        x = F.leaky_relu(x)  # default slope, as upstream
        return self.conv_post(x), global_features


class QuantizerModule(nn.Module):
    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)

    def forward(self, x):
        weight = self.embedding.weight
        d = torch.sum(x**2, 1, keepdim=True) + torch.sum(weight**2, 1) - 2 * torch.matmul(x, weight.T)
        idx = torch.argmin(d, 1)
        return self.embedding(idx), idx


class Quantizer(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.dim = h.get("codebook_dim", 512)
        self.width = h.get("speaker_width", 128)
        self.global_code_num = h.global_code_num
        self.quantizer_modules = nn.ModuleList([QuantizerModule(h.n_codes, self.dim)])
        self.quantizer_modules_globaltokens = nn.ModuleList(
            QuantizerModule(h.n_codes, self.width // h.global_code_num) for _ in range(h.global_code_num)
        )

    def quantize(self, xin, global_style):
        # (B, C, T) -> indices (B*T,); global (B, width) -> list of (B,) per global codebook
        flat = xin.transpose(1, 2).reshape(-1, self.dim)
        _, local = self.quantizer_modules[0](flat)
        parts = torch.split(global_style.reshape(-1, self.width), self.width // self.global_code_num, dim=-1)
        global_tokens = [m(part)[1] for part, m in zip(parts, self.quantizer_modules_globaltokens)]
        return local, global_tokens

    def embed(self, x):
        # (B, T, 1) -> (B, C, T)
        return self.quantizer_modules[0].embedding(x[:, :, 0]).transpose(1, 2)

    def embed_gst(self, x):
        # (B, 1, N) -> (B, width, 1)
        parts = [m.embedding(x[:, :, j]) for j, m in enumerate(self.quantizer_modules_globaltokens)]
        return torch.cat(parts, -1).transpose(1, 2)


class OriginalVQVAE(nn.Module):
    """Upstream's VQVAE with its encoder: `forward(tokens (B, T, 1), global (B, 1, N))` decodes, `encode(wav (B, N))`
    gives (codes (B, T, 1), global tokens (B, 1, N))."""

    def __init__(self, model_json: dict):
        super().__init__()
        h = Hyper(model_json)
        self.quantizer = Quantizer(h)
        self.generator = Generator(h)
        self.encoder = Encoder(h)

    def forward(self, x, global_style_token):
        return self.generator(self.quantizer.embed(x), self.quantizer.embed_gst(global_style_token).squeeze(-1))

    def encode(self, wav):
        batch_size = wav.size(0)
        c, global_features = self.encoder(wav.unsqueeze(1))
        local, global_tokens = self.quantizer.quantize(c, global_features)
        return local.reshape(batch_size, -1).unsqueeze(-1), torch.stack(global_tokens, -1).unsqueeze(1)

    def release_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The three state dicts as `final.pt` stores them."""
        return {name: getattr(self, name).state_dict() for name in ("generator", "quantizer", "encoder")}
