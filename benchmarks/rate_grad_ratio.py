import copy, statistics, torch, torch.nn.functional as F
from sj_distill import models, rate, sj
from sj_distill.data import digits
torch.manual_seed(0)
T = 4
net = models.create_model("cifar_resnet20", num_classes=10, decay=0.2, v_threshold=1.0, reset="soft",
                          detach_reset=True, surrogate_fn="sigmoid", alpha=4.0)
from sklearn.datasets import load_digits
d = load_digits()
x = torch.tensor(d.images[:64], dtype=torch.float32)[:, None] / 16
x = F.interpolate(x, size=16, mode="bilinear").expand(-1, 3, -1, -1)
x = (x - x.mean()) / x.std()
y = torch.tensor(d.target[:64])
xs = x.unsqueeze(0).expand(T, *x.shape)
bptt = copy.deepcopy(net).train()
F.cross_entropy(bptt(xs).mean(0), y).backward()
for scale in (True, False):
    r = rate.enable(copy.deepcopy(net), scale_grad_by_T=scale).train()
    F.cross_entropy(r(xs), y).backward()
    ratios = [(pr.grad.norm() / pb.grad.norm()).item() for pr, pb in zip(r.parameters(), bptt.parameters()) if pb.grad.norm() > 0]
    cos = [F.cosine_similarity(pr.grad.flatten(), pb.grad.flatten(), 0).item() for pr, pb in zip(r.parameters(), bptt.parameters()) if pb.grad.norm() > 0]
    print(f"scale_grad_by_T={scale}: |g_rate|/|g_bptt| median {statistics.median(ratios):.3f} min {min(ratios):.3f} max {max(ratios):.3f}; cosine median {statistics.median(cos):.3f}")
