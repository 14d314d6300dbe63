"""Side by side in one process: a UNet training step and inference in fp32 and in bf16 autocast + channels_last on the
CPU (issue 23). Usage: OMP_NUM_THREADS=2 python benchmarks/precision_cpu.py benchmarks/precision_cpu.json"""
import time, json, sys, platform, torch
from manga_colorization.models import make_generator
from manga_colorization.core import autocast, precision_memory_format, cpu_flags
torch.manual_seed(0)
def step_time(G, prec, x, y, n=5):
    mf = precision_memory_format(prec)
    G = G.to(memory_format=mf); x = x.to(memory_format=mf)
    opt = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    ts = []
    for i in range(n + 1):
        t = time.perf_counter()
        with autocast("cpu", prec): out = G(x)
        loss = (out.float() - y).abs().mean()
        opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t)
    return sorted(ts[1:])[len(ts[1:]) // 2]
def infer_time(G, prec, x, n=5):
    mf = precision_memory_format(prec); G = G.eval().to(memory_format=mf); x = x.to(memory_format=mf)
    ts = []
    with torch.no_grad():
        for i in range(n + 1):
            t = time.perf_counter()
            with autocast("cpu", prec): G(x)
            ts.append(time.perf_counter() - t)
    return sorted(ts[1:])[len(ts[1:]) // 2]
res = {"cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
       "amx_bf16": "amx_bf16" in cpu_flags(), "avx512_bf16": "avx512_bf16" in cpu_flags(),
           "threads": torch.get_num_threads(), "torch": torch.__version__}
for name, kw in [("unet_depth7_w64", dict(depth=7)), ("unet_default", {})]:
    x, y = torch.randn(4, 1, 128, 128), torch.rand(4, 3, 128, 128) * 2 - 1
    r = {}
    for prec in ("fp32", "bf16", "fp32", "bf16"):
        G = make_generator("unet", pretrained=False, **kw); G.train()
        r.setdefault(prec + "_train_s", []).append(step_time(G, prec, x, y))
        r.setdefault(prec + "_infer_s", []).append(infer_time(G, prec, x[:1]))
    r = {k: min(v) for k, v in r.items()}
    r["train_ratio_fp32_over_bf16"] = r["fp32_train_s"] / r["bf16_train_s"]
    r["infer_ratio_fp32_over_bf16"] = r["fp32_infer_s"] / r["bf16_infer_s"]
    res[name] = r
    print(name, json.dumps(r), flush=True)
json.dump(res, open(sys.argv[1], "w"), indent=1)
