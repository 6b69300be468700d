"""What a stored run gets right and wrong on its test split: the confusion matrix and the images
it is most confident about while wrong."""

import torch

from cnnrepro.inspect.stored import StoredRun


@torch.no_grad()
def test_probabilities(run: StoredRun) -> torch.Tensor:
    """Softmax probabilities (N, classes) of the run's test split, in the run's test batches (the
    batching the recorded test accuracy was measured with)."""
    device, test, size = next(run.model.parameters()).device, run.test, run.config.batch_size
    chunks = [
        torch.softmax(run.model(test.rows(slice(start, start + size)).to(device)).double(), dim=1).cpu()
        for start in range(0, len(test), size)
    ]
    return torch.cat(chunks)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts: row the true class, column the predicted one."""
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)


def confident_mistakes(labels: torch.Tensor, probabilities: torch.Tensor, count: int) -> list[int]:
    """The indices of the ``count`` wrong predictions made with the highest probability, most
    confident first (ties: the lower index first)."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    order = confidence[wrong].sort(descending=True, stable=True).indices
    return wrong[order][:count].tolist()
