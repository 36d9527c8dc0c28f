"""BLO-SAM: bi-level optimisation of a learned prompt (upper level) and decoder weights (lower level).

The training slices are split into two halves, D1 and D2 (by case when there are several cases).
Each iteration makes one *lower* step, an AdamW step on the weights ``w`` with a D1 batch while the
prompt ``a`` stays fixed, then one *upper* step, an AdamW step on the prompt with a D2 batch through
the updated weights ``w'``. Every epoch visits all of D1 and all of D2 (the reference code reused
the first D2 sample for every upper step).

The upper gradient (hypergradient) of ``L2(w'(a), a)`` with ``w' = w - xi * grad_w L1(w, a)`` is::

    grad_a L2(w', a) - xi * d2L1/(da dw)(w, a) . grad_w' L2(w', a)

*First order* keeps the first term only. *Second order* adds the mixed term, with the
Hessian-vector product taken by central finite differences (DARTS)::

    d2L1/(da dw) . v  ~=  (grad_a L1(w + eps v, a) - grad_a L1(w - eps v, a)) / (2 eps),  eps = r / |v|

The best checkpoint is the one with the highest foreground Dice on D2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from samtune.errors import ConfigurationError, DataError
from samtune.train.config import Hypergradient
from samtune.train.data import SliceSamples
from samtune.train.schedule import make_scheduler
from samtune.train.trainer import Trainer

LossFn = Callable[[], torch.Tensor]


def split_d1_d2(samples: SliceSamples, *, d2_fraction: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic D1 / D2 halves of the training samples (row indices into ``samples``).

    With several cases the split is by case (the slices of one case never straddle D1 and D2); with
    one case it is by slice. The assignment depends only on the case ids (or the slice count) and
    the seed, not on the order files were listed in.

    Raises:
        DataError: Fewer than two labelled slices, or a half with no slice showing the structure.
    """
    n = len(samples)
    if n < 2:
        raise DataError(
            f"BLO-SAM splits the labelled slices into two halves (D1 for the weights, D2 for the prompt) and "
            f"needs at least two; got {n}. Label another slice, or use the 'cpu_quick' preset, which trains "
            "from a single slice."
        )
    cases = sorted(set(samples.case_ids))
    rng = np.random.default_rng(seed)
    if len(cases) > 1:
        order = [cases[i] for i in rng.permutation(len(cases))]
        n2 = min(len(cases) - 1, max(1, round(d2_fraction * len(cases))))
        d2_cases = set(order[:n2])
        d2 = [i for i, case in enumerate(samples.case_ids) if case in d2_cases]
        where = f"cases {sorted(d2_cases)}"
    else:
        n2 = min(n - 1, max(1, round(d2_fraction * n)))
        d2 = sorted(int(i) for i in rng.permutation(n)[:n2])
        where = f"{len(d2)} slices of case '{cases[0]}'"
    chosen = set(d2)
    d1 = [i for i in range(n) if i not in chosen]
    for name, half, text in (("D1", d1, "the weights learn from"), ("D2", d2, "picks the best checkpoint")):
        if not any(bool(samples.masks[i].any()) for i in half):
            shown = where if name == "D2" else "the other half"
            raise DataError(
                f"BLO-SAM's {name} ({shown}) has no slice that shows the structure after empty slices were "
                f"filtered; {name} is what {text}. Label the structure on more slices or in more cases, or use "
                "the 'cpu_quick' preset."
            )
    return d1, d2


def _zeros_for_none(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def prompt_hypergradient(
    upper_loss: LossFn,
    lower_loss: LossFn,
    weights: Sequence[torch.nn.Parameter],
    prompt: Sequence[torch.nn.Parameter],
    *,
    order: Hypergradient | str = Hypergradient.FIRST,
    xi: float = 0.0,
    weights_before: Sequence[torch.Tensor] | None = None,
    fd_epsilon: float = 0.01,
) -> tuple[list[torch.Tensor], float]:
    """Gradient of the upper loss with respect to the prompt, through the lower step.

    Args:
        upper_loss: ``L2`` on a D2 batch at the model's current parameters (the updated weights ``w'``).
        lower_loss: ``L1`` on the D1 batch of the lower step, at the model's current parameters.
        weights: The lower level's parameters (currently holding ``w'``).
        prompt: The upper level's parameters ``a``.
        order: ``first`` or ``second``.
        xi: Step size of the unrolled lower step (second order).
        weights_before: ``w``, the weights before the lower step (second order).
        fd_epsilon: Finite-difference radius ``r`` (``eps = r / |grad_w' L2|``).

    Returns:
        ``(gradients, upper loss value)``; one gradient per prompt parameter. The weights hold
        ``w'`` again on return.
    """
    loss = upper_loss()
    value = float(loss.detach())
    if Hypergradient.parse(order) is Hypergradient.FIRST:
        return _zeros_for_none(torch.autograd.grad(loss, list(prompt), allow_unused=True), prompt), value
    if weights_before is None:
        raise ValueError("The second-order hypergradient needs the weights before the lower step.")
    grads = torch.autograd.grad(loss, [*prompt, *weights], allow_unused=True)
    direct = _zeros_for_none(grads[: len(prompt)], prompt)
    v = _zeros_for_none(grads[len(prompt) :], weights)
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in v))  # type: ignore[arg-type]
    if float(norm) == 0.0 or xi == 0.0:
        return direct, value
    eps = fd_epsilon / float(norm)
    updated = [w.detach().clone() for w in weights]

    def prompt_grad_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, w0, g in zip(weights, weights_before, v):
                w.copy_(w0 + sign * eps * g)
        return _zeros_for_none(torch.autograd.grad(lower_loss(), list(prompt), allow_unused=True), prompt)

    try:
        plus = prompt_grad_at(1.0)
        minus = prompt_grad_at(-1.0)
    finally:
        with torch.no_grad():
            for w, w1 in zip(weights, updated):
                w.copy_(w1)
    return [d - xi * (p - m) / (2 * eps) for d, p, m in zip(direct, plus, minus)], value


class _EpochCycler:
    """Batches of a fixed index set: a fresh seeded permutation each epoch, repeated as needed.

    Every index appears at least once in the first ``ceil(len / batch)`` batches of an epoch.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, generator: torch.Generator) -> None:
        self.indices = torch.tensor(list(indices), dtype=torch.long)
        self.batch_size = batch_size
        self.generator = generator

    def epoch(self, steps: int) -> list[torch.Tensor]:
        batches: list[torch.Tensor] = []
        while len(batches) < steps:
            order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
            batches.extend(order.split(self.batch_size))
        return batches[:steps]


class BiLevelTrainer(Trainer):
    """BLO-SAM's trainer: lower steps on the weights with D1, upper steps on the prompt with D2.

    Takes the same arguments as :class:`Trainer`; the model must carry a learned prompt
    (``finetune.learned_prompt.enabled``) and at least one other trainable parameter.

    Attributes:
        d1: Training-sample rows of D1.
        d2: Training-sample rows of D2.
        visited_d2: Per epoch, the D2 rows the upper level used (tests check it covers D2).
    """

    def _setup(self) -> None:
        config = self.config
        if self.distributed is not None:
            raise ConfigurationError(
                "BLO-SAM trains in one process (its few slices do not split over several); start it without torchrun."
            )
        self.d1, self.d2 = split_d1_d2(self.train_samples, d2_fraction=config.bilevel.d2_fraction, seed=config.seed)
        self.visited_d2: list[list[int]] = []
        self.order = config.bilevel.hypergradient
        self.d1_batches = _EpochCycler(self.d1, config.batch_size, self.generator)
        self.d2_batches = _EpochCycler(self.d2, config.batch_size, self.generator)

    def _steps_per_epoch(self) -> int:
        batch = self.config.batch_size
        return max(math.ceil(len(self.d1) / batch), math.ceil(len(self.d2) / batch))

    def _build_optimisers(self) -> None:
        if not self.prompt_parameters:
            raise ConfigurationError(
                "BLO-SAM needs a learned prompt: set finetune.learned_prompt.enabled to true (the blo_sam preset does)."
            )
        if not self.weight_parameters:
            raise ConfigurationError("BLO-SAM needs trainable decoder weights besides the prompt.")
        config = self.config
        self.optimizer = torch.optim.AdamW([self._weight_group()])
        self.scheduler = make_scheduler(
            self.optimizer, total_steps=self.total_steps, warmup_steps=config.warmup_steps, power=config.poly_power
        )
        self.prompt_optimizer = torch.optim.AdamW([self._prompt_group()])
        self.prompt_scheduler = make_scheduler(
            self.prompt_optimizer,
            total_steps=self.total_steps,
            warmup_steps=config.bilevel.prompt_warmup_steps,
            power=config.bilevel.prompt_poly_power,
        )

    def _groups(self) -> list[dict[str, object]]:
        return [*self.optimizer.param_groups, *self.prompt_optimizer.param_groups]

    def _batch_loss(self, indices: torch.Tensor) -> LossFn:
        images, embeddings, masks = self._batch(indices)

        def loss() -> torch.Tensor:
            with self._autocast():
                return self._objective(images, embeddings, masks)

        return loss

    def lower_step(self, indices: torch.Tensor) -> tuple[float, LossFn]:
        """AdamW step on the weights with D1 rows ``indices``, the prompt fixed.

        Returns:
            ``(loss, loss function)``; the function re-evaluates this batch's loss (for the
            second-order term).
        """
        self.model.train()
        loss_fn = self._batch_loss(indices)
        loss = loss_fn()
        self._check_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weight_parameters)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), loss_fn

    def upper_step(
        self,
        indices: torch.Tensor,
        *,
        lower_loss: LossFn | None = None,
        weights_before: Sequence[torch.Tensor] | None = None,
        xi: float = 0.0,
    ) -> float:
        """AdamW step on the prompt with D2 rows ``indices`` through the current (updated) weights."""
        self.model.train()
        second = self.order is Hypergradient.SECOND and lower_loss is not None and weights_before is not None
        grads, loss = prompt_hypergradient(
            self._batch_loss(indices),
            lower_loss or (lambda: torch.zeros(())),
            self.weight_parameters,
            self.prompt_parameters,
            order=self.order if second else Hypergradient.FIRST,
            xi=xi,
            weights_before=weights_before,
            fd_epsilon=self.config.bilevel.fd_epsilon,
        )
        if not math.isfinite(loss):
            self._check_finite(torch.tensor(loss))
        self.prompt_optimizer.zero_grad(set_to_none=True)
        for parameter, grad in zip(self.prompt_parameters, grads):
            parameter.grad = grad.detach()
        self.prompt_optimizer.step()
        self.prompt_scheduler.step()
        return loss

    def _xi(self) -> float:
        xi = self.config.bilevel.xi
        return float(self.optimizer.param_groups[0]["lr"]) if xi is None else float(xi)

    def iteration(self, lower: torch.Tensor, upper: torch.Tensor) -> dict[str, float]:
        """One lower step on D1 rows ``lower``, then one upper step on D2 rows ``upper``."""
        second = self.order is Hypergradient.SECOND
        before = [w.detach().clone() for w in self.weight_parameters] if second else None
        xi = self._xi()
        loss, lower_fn = self.lower_step(lower)
        upper_loss = self.upper_step(upper, lower_loss=lower_fn if second else None, weights_before=before, xi=xi)
        return {"loss": loss, "upper_loss": upper_loss}

    def _epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        steps = self.steps_per_epoch
        plan = [
            [lower.tolist(), upper.tolist()]
            for lower, upper in zip(self.d1_batches.epoch(steps), self.d2_batches.epoch(steps))
        ]
        self.visited_d2.append(sorted({i for _, upper in plan for i in upper}))
        return plan

    def _run_step(self, item: list[list[int]]) -> dict[str, float]:
        lower, upper = (torch.tensor(rows, dtype=torch.long) for rows in item)
        return self.iteration(lower, upper)

    def _optimiser_state(self) -> dict[str, Any]:
        return {
            **super()._optimiser_state(),
            "prompt_optimizer": self.prompt_optimizer.state_dict(),
            "prompt_scheduler": self.prompt_scheduler.state_dict(),
        }

    def _load_optimiser_state(self, state: dict[str, Any]) -> None:
        super()._load_optimiser_state(state)
        self.prompt_optimizer.load_state_dict(state["prompt_optimizer"])
        self.prompt_scheduler.load_state_dict(state["prompt_scheduler"])

    def _epoch_metrics(self) -> dict[str, float]:
        d2_dice, d2_nsd = self.evaluate(self.train_samples, self.cache, self.d2)
        return {"d2_dice": d2_dice, "d2_nsd": d2_nsd, **self.validate()}

    def _score(self, metrics: dict[str, float]) -> float:
        """BLO-SAM picks the best checkpoint by foreground Dice on D2."""
        return metrics["d2_dice"]


__all__ = ["BiLevelTrainer", "prompt_hypergradient", "split_d1_d2"]
