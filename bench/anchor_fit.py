"""Training anchor for bench/fit.R: the same two models trained by PyTorch
1.13 (autograd, Adam with Keras's defaults, the same batch size and shuffling
per epoch) on random data of the same shapes, float32. Prints
model,epoch,seconds for every epoch."""

import argparse
import time

import torch
import torch.nn as nn


class Classifier(nn.Module):
    """conv 16 - conv 16 - max pool - conv 32 - global average - dense 1."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            nn.Linear(32, 1), nn.Sigmoid())

    def forward(self, x):
        return self.body(x)


class Segmenter(nn.Module):
    """A one-level U-Net: two convs, max pool, conv, transposed conv (2, stride
    2), concatenation with the skip, conv, 1x1x1 conv to one sigmoid map."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 16, 3, padding=1)
        self.c2 = nn.Conv3d(16, 16, 3, padding=1)
        self.c3 = nn.Conv3d(16, 32, 3, padding=1)
        self.up = nn.ConvTranspose3d(32, 16, 2, stride=2)
        self.c4 = nn.Conv3d(32, 16, 3, padding=1)
        self.out = nn.Conv3d(16, 1, 1)

    def forward(self, x):
        skip = torch.relu(self.c2(torch.relu(self.c1(x))))
        deep = torch.relu(self.c3(nn.functional.max_pool3d(skip, 2)))
        up = self.up(deep)
        joined = torch.relu(self.c4(torch.cat([up, skip], 1)))
        return torch.sigmoid(self.out(joined))


def data(model, n, side):
    x = torch.rand(n, 1, side, side, side)
    if model == "classifier":
        y = torch.randint(0, 2, (n, 1)).float()
    else:
        y = (torch.rand(n, 1, side, side, side) < 0.3).float()
    return x, y


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--models", default="classifier,segmenter")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    sizes = {"classifier": (16, 48), "segmenter": (8, 32)}
    print("model,epoch,seconds")
    for name in a.models.split(","):
        n, side = sizes[name]
        net = Classifier() if name == "classifier" else Segmenter()
        x, y = data(name, n, side)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = nn.BCELoss()
        for epoch in range(a.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n)
            for i in range(0, n, 2):
                idx = order[i:i + 2]
                opt.zero_grad()
                loss = loss_fn(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
            print(f"{name},{epoch + 1},{time.perf_counter() - t0:.4f}", flush=True)


if __name__ == "__main__":
    main()
