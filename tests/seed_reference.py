"""The original "Manga Colorization Model" (the seed), re-written for the tests from the description in issue 12 and
DESIGN.md.

Nothing here is imported from the seed or from `manga_colorization`: the layers, losses and training step are written
out from the table (biases before every BatchNorm, a norm on every down block, PyTorch's default init, the 4-stride-2
PatchGAN, G then D, VGG MSE summed over relu1_2/2_2/3_3 on [-1, 1] input through all 31 layers, the anime MSE on the
512-d head before its ReLU at 360² without gradient, the extractor following `.train()`). Module names follow the seed's
state dicts (`down1.conv`, `down1.bn`, `up1.deconv`, `up8`, `attn.query_conv`, `context.body`, `context.head`; D:
`conv1`, `conv2.conv`, ..., `conv5`), so its checkpoints can be written here. Widths and depth are parameters, so small
copies run on a CPU; at the seed's 256² the bottleneck is 1×1, and the extractor's vector is broadcast over it (the
seed's `unsqueeze` only fits a 1×1 map)."""
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

DANBOORU = ((0.7137, 0.6628, 0.6519), (0.2970, 0.3017, 0.2979))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _norm(x, stats):
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in stats)
    return (x - mean) / std


class ConvBN(nn.Module):
    "conv k4 (bias) → BatchNorm → LeakyReLU 0.2"
    def __init__(self, c_in, c_out, stride=2):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c_in, c_out, 4, stride, 1), nn.BatchNorm2d(c_out)

    def forward(self, x): return F.leaky_relu(self.bn(self.conv(x)), 0.2)


class DeconvBN(nn.Module):
    "transposed conv k4 s2 (bias) → BatchNorm → ReLU → dropout 0.5 (when asked)"
    def __init__(self, c_in, c_out, dropout):
        super().__init__()
        self.deconv, self.bn, self.p = nn.ConvTranspose2d(c_in, c_out, 4, 2,
                                                          1), nn.BatchNorm2d(c_out), 0.5 if dropout else 0.0

    def forward(self, x): return F.dropout(F.relu(self.bn(self.deconv(x))), self.p, self.training)


class Attention(nn.Module):
    "SAGAN self-attention, unscaled: x + gamma · V softmax(QᵀK)ᵀ"
    def __init__(self, c):
        super().__init__()
        self.query_conv, self.key_conv, self.value_conv = nn.Conv2d(c, c // 8,
                                                                    1), nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k = self.query_conv(x).reshape(b, -1, h * w), self.key_conv(x).reshape(b, -1, h * w)
        v = self.value_conv(x).reshape(b, c, h * w)
        weights = torch.softmax(q.transpose(1, 2) @ k, dim=-1)                  # (b, positions, positions)
        return x + self.gamma * (v @ weights.transpose(1, 2)).reshape(b, c, h, w)


def danbooru_parts():
    ("RF5's ResNet50 body and its head up to the 512-wide linear layer (pool max‖avg, flatten, BN1d, dropout 0.25, "
     "linear).")
    body = nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2])
    pool = type("ConcatPool", (nn.Module,),
                {"forward": lambda self, x: torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1)})
    head = nn.Sequential(pool(), nn.Flatten(), nn.BatchNorm1d(4096), nn.Dropout(0.25), nn.Linear(4096, 512))
    return body, head


class Context(nn.Module):
    ("The generator's extractor: frozen weights, but it follows `.train()` (defect 3); 512-d head output without ReLU "
     "at `size`².")
    def __init__(self, size=360):
        super().__init__()
        self.size = size
        self.body, self.head = danbooru_parts()
        for p in self.parameters(): p.requires_grad_(False)

    def forward(self, x):
        x = (x.repeat(1, 3, 1, 1) + 1) / 2
        x = _norm(F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False), DANBOORU)
        with torch.no_grad(): return self.head(self.body(x))


class SeedUNet(nn.Module):
    "The seed's ColorizationUNet (widths 64..512, 8 levels at its defaults: 54,418,563 parameters)."
    def __init__(self, widths=(64, 128, 256, 512, 512, 512, 512, 512), in_ch=1, out_ch=3, attention=False,
                 extractor=False, ext_size=360):
        super().__init__()
        n = len(widths)
        for i, (a, b) in enumerate(zip((in_ch,) + tuple(widths[:-1]), widths)):
            setattr(self, f"down{i + 1}", ConvBN(a, b))
        self.n, self.use_attention, self.use_extractor = n, attention, extractor
        bottleneck = widths[-1] + (512 if extractor else 0)
        if extractor: self.context = Context(ext_size)
        if attention: self.attn = Attention(bottleneck)
        for j in range(1, n):
            setattr(self, f"up{j}",
                    DeconvBN(bottleneck if j == 1 else 2 * widths[n - j], widths[n - 1 - j], dropout=j <= 3))
        setattr(self, f"up{n}", nn.ConvTranspose2d(2 * widths[0], out_ch, 4, 2, 1))

    def forward(self, x):
        skips, h = [], x
        for i in range(1, self.n + 1):
            h = getattr(self, f"down{i}")(h); skips.append(h)
        if self.use_extractor:
            c = self.context(x)
            h = torch.cat([h, c[:, :, None, None].expand(-1, -1, *h.shape[-2:])], 1)
        if self.use_attention: h = self.attn(h)
        for j in range(1, self.n):
            h = torch.cat([getattr(self, f"up{j}")(h), skips[self.n - 1 - j]], 1)
        return torch.tanh(getattr(self, f"up{self.n}")(h))


class SeedD(nn.Module):
    "The seed's PatchDiscriminator: conv1 (no norm), conv2-conv4 (conv+BN, stride 2), conv5 (stride 1): 15×15 at 256²."
    def __init__(self, in_ch=4, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 4, 2, 1)
        self.conv2, self.conv3, self.conv4 = ConvBN(width, 2 * width), ConvBN(2 * width,
                                                                              4 * width), ConvBN(4 * width, 8 * width)
        self.conv5 = nn.Conv2d(8 * width, 1, 4, 1, 1)

    def forward(self, sketch, color):
        x = F.leaky_relu(self.conv1(torch.cat([sketch, color], 1)), 0.2)
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))


class SeedVGG(nn.Module):
    ("The seed's perceptual loss: [-1, 1] images ImageNet-normalised (no [0, 1] map), all 31 layers, Σ MSE at layers "
     "3, 8, 15.")
    def __init__(self):
        super().__init__()
        self.vgg = torchvision.models.vgg16(weights=None).features.eval().requires_grad_(False)

    def forward(self, output, target):
        xo, xt, loss = _norm(output, IMAGENET), _norm(target, IMAGENET), 0.0
        for i, layer in enumerate(self.vgg):
            xo, xt = layer(xo), layer(xt)
            if i in (3, 8, 15): loss = loss + F.mse_loss(xo, xt)
        return loss


class SeedAnime(nn.Module):
    "The seed's AnimeLoss: a·MSE of the 512-d head vectors (no gradient: defect 2) + (1-a)·SeedVGG, a = 0.1."
    def __init__(self, size=360, a=0.1):
        super().__init__()
        self.size, self.a, self.vgg = size, a, SeedVGG()
        self.body, self.head = danbooru_parts()
        self.body.eval().requires_grad_(False); self.head.eval().requires_grad_(False)

    def features(self, x):
        x = _norm(F.interpolate((x + 1) / 2, size=(self.size, self.size), mode="bilinear", align_corners=False),
                  DANBOORU)
        with torch.no_grad(): return self.head(self.body(x))

    def forward(self, output, target):
        return self.a * F.mse_loss(self.features(output),
                                   self.features(target)) + (1 - self.a) * self.vgg(output, target)


def seed_step(G, D, opt_g, opt_d, sketch, color, perceptual=None):
    "One step of the seed's trainer: G against the current D, then D on (real, the same fake detached)."
    G.train(); D.train()
    fake = G(sketch)
    fake_pred = D(sketch, fake)
    loss_g = 0.01 * F.binary_cross_entropy_with_logits(fake_pred,
                                                       torch.ones_like(fake_pred)) + 1.0 * F.l1_loss(fake, color)
    if perceptual is not None: loss_g = loss_g + 0.1 * perceptual(fake, color)
    opt_g.zero_grad(); loss_g.backward(); opt_g.step()
    real_pred, fake_pred = D(sketch, color), D(sketch, fake.detach())
    loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real_pred, torch.ones_like(real_pred))
                    + F.binary_cross_entropy_with_logits(fake_pred, torch.zeros_like(fake_pred)))
    opt_d.zero_grad(); loss_d.backward(); opt_d.step()
    return loss_g.item(), loss_d.item()


D_KEYS = {"conv1": "net.0", "conv2.conv": "net.2", "conv2.bn": "net.3", "conv3.conv": "net.5", "conv3.bn": "net.6",
          # the seed's D names → our PatchDiscriminator's
          "conv4.conv": "net.8", "conv4.bn": "net.9", "conv5": "net.11"}


def randomize_norms(module, seed=0):
    "Random BatchNorm scales, shifts and running statistics (and an open attention gate), so folding them is tested."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if name.startswith("context"): continue                   # the extractor keeps its own (random) statistics
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g)); m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            if isinstance(m, Attention): m.gamma.fill_(0.7)
    return module
