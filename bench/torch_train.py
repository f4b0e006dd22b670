#!/usr/bin/python3
"""Reference figures for vae-bench: the pytorch/examples MNIST VAE (vae/main.py) trained by Python PyTorch.

Same model and loss as pytorch/examples: 784-400-20 encoder (ReLU; fc21/fc22 give mu and logvar), 20-400-784
decoder (ReLU, sigmoid), loss = BCE summed over pixels + KL(q(z|x) || N(0, I)), Adam lr 1e-3, batch 128.
Unlike the example, the data loader is replaced by what vae-service does: the whole training set is one float
tensor in memory (idx files read with numpy, /255), each epoch visits it in a torch.randperm order and builds each
batch with index_select. So the images/s figure compares the two training loops, not two data pipelines.

Uses Debian's python3-torch (hence /usr/bin/python3, not a pyenv python). Prints one line per epoch and, as the
last line of stdout, one JSON object:
  {"images_per_sec_median": ..., "test_loss": ..., "epochs": ..., "threads": ..., "torch_version": ..., ...}
test_loss is the -ELBO summed over the 10000 test images divided by 10000, with z sampled (as the example does).

  bench/torch_train.py --data_dir=data --epochs=1 --threads=2
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(path):
    """Reads an unsigned-byte idx file (plain, or gzipped as path + '.gz') into a numpy array."""
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            break
    else:
        sys.exit(f"torch_train.py: neither {path} nor {path}.gz exists; run scripts/fetch-data.sh")
    opener = gzip.open if candidate.endswith(".gz") else open
    with opener(candidate, "rb") as f:
        data = f.read()
    zero, dtype, ndims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"torch_train.py: {candidate}: not an unsigned-byte idx file")
    dims = struct.unpack(f">{ndims}I", data[4:4 + 4 * ndims])
    offset = 4 + 4 * ndims
    if len(data) - offset != int(np.prod(dims)):
        sys.exit(f"torch_train.py: {candidate}: header promises {int(np.prod(dims))} bytes, "
                 f"file has {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_images(data_dir, split):
    """[N, 784] float32 in [0, 1]."""
    images = read_idx(os.path.join(data_dir, "mnist", f"{split}-images-idx3-ubyte"))
    return torch.from_numpy(images.astype(np.float32) / 255.0).reshape(images.shape[0], -1).contiguous()


class VAE(nn.Module):
    """pytorch/examples vae/main.py, unchanged."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    # Reconstruction: Bernoulli log-likelihood, summed over pixels and the batch.
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # KL(N(mu, sigma^2) || N(0, 1)) = -0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2)  (Kingma & Welling, appendix B)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def train_epoch(model, optimizer, train, batch_size, generator):
    model.train()
    n = train.shape[0]
    perm = torch.randperm(n, generator=generator)
    total = 0.0
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        x = train.index_select(0, perm[i:i + batch_size])
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        loss = loss_function(recon, x, mu, logvar)
        loss.backward()
        total += loss.item()
        optimizer.step()
    elapsed = time.perf_counter() - start
    return n / elapsed, total / n


def evaluate(model, test, batch_size):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, test.shape[0], batch_size):
            x = test[i:i + batch_size]
            recon, mu, logvar = model(x)
            total += loss_function(recon, x, mu, logvar).item()
    return total / test.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(__file__), "..", "data"),
                        help="directory scripts/fetch-data.sh filled (reads DATA_DIR/mnist)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # Before any op: the intra-op pool is sized on first use.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train = load_images(args.data_dir, "train")
    test = load_images(args.data_dir, "t10k")
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    rates = []
    test_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        rate, train_loss = train_epoch(model, optimizer, train, args.batch_size, generator)
        test_loss = evaluate(model, test, args.batch_size)
        rates.append(rate)
        print(f"epoch {epoch}: {rate:.0f} images/s, train loss {train_loss:.4f}, test loss {test_loss:.4f}",
              flush=True)

    print(json.dumps({
        "images_per_sec_median": round(statistics.median(rates), 1),
        "images_per_sec": [round(r, 1) for r in rates],
        "test_loss": round(test_loss, 4),
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "train_images": train.shape[0],
        "test_images": test.shape[0],
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
