"""Score a dataset with a trained model and write a friend tree (run, event, score).

    python examples/infer.py model.pt cache/jets scores.root

Reading ROOT directly without a cache also works:
``infer(model, "data/run1.root", "scores.root", schema="schemas/jet-tagging.yaml")``.
"""

import sys

from rntensor.infer import infer


def main() -> None:
    model, data, output = sys.argv[1:4]
    print(infer(model, data, output, batch_size=8192).summary())


if __name__ == "__main__":
    main()
