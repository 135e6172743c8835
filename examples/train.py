"""Train a small jet tagger on a converted cache with the rntensor DataLoader.

    rntensor generate data/ --events 200000 --files 4
    rntensor convert schemas/jet-tagging.yaml data/ --output cache/jets
    python examples/train.py cache/jets --epochs 2

Works unchanged under torchrun (DDP): rank and world size come from torch.distributed.
"""

import argparse

import torch

from rntensor.demo import make_model
from rntensor.torch import DataLoader


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cache")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    loader = DataLoader(
        args.cache,
        batch_size=args.batch_size,
        shuffle=True,
        seed=1,
        num_workers=args.workers,
        split="train",
        device=args.device,
        pin_memory=args.device == "cuda",
    )
    val = DataLoader(args.cache, batch_size=4096, split="val", device=args.device)
    model = make_model().to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lossf = torch.nn.CrossEntropyLoss(reduction="none")
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        model.train()
        for step, batch in enumerate(loader):
            loss = (lossf(model(batch), batch["target"]) * batch["weight"]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in val:
                correct += (model(batch).argmax(1) == batch["target"]).sum().item()
                total += len(batch["target"])
        print(f"epoch {epoch}: validation accuracy {correct / max(total, 1):.3f}")
    torch.save(model.cpu(), "model.pt")
    print("saved model.pt (for: rntensor infer model.pt cache/jets --output scores.root)")


if __name__ == "__main__":
    main()
