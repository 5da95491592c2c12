"""A small MLP trained with plain PyTorch on this site's generated data (data.py).

train_local.py trains alone; train_fl.py is the same script plus the few lines that make it a
Flotilla client (diff in python/README.md): each round it receives the global model, trains it
and sends it back."""
import argparse

import torch
from torch import nn

from data import CLASSES, FEATURES, site_data


class Dense(nn.Module):
    """x @ kernel + bias, kernel stored [in, out]: the layout of the TypeScript examples, so both can share a model."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_in, n_out)))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.kernel + self.bias


class Net(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.dense1 = Dense(FEATURES, hidden)
        self.dense2 = Dense(hidden, CLASSES)

    def forward(self, x):
        return self.dense2(torch.relu(self.dense1(x)))


def train(net, x, y, epochs, batch_size, lr):
    """SGD over the data in order; returns (steps, last batch loss)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    steps = 0
    for _ in range(epochs):
        for b in range(0, len(x), batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[b : b + batch_size]), y[b : b + batch_size])
            loss.backward()
            opt.step()
            steps += 1
    return steps, loss.item()


def evaluate(net, x, y):
    with torch.no_grad():
        out = net(x)
        return nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--site-index", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--out", default="model.pt", help="where to save the final local model")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(args.site_index)
    x, y = (torch.from_numpy(a) for a in site_data(args.site_index, args.samples, "train"))
    vx, vy = (torch.from_numpy(a) for a in site_data(args.site_index, 200, "val"))
    net = Net()

    for rnd in range(args.rounds):
        steps, train_loss = train(net, x, y, args.epochs, args.batch_size, args.lr)
        val_loss, val_acc = evaluate(net, vx, vy)
        print(f"round {rnd}: {steps} steps, train_loss {train_loss:.4f} val_loss {val_loss:.4f} val_accuracy {val_acc:.3f}")

    torch.save(net.state_dict(), args.out)


if __name__ == "__main__":
    main()
