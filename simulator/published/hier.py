"""Partial pooling of efficiencies along the hardware lineage: global -> architecture -> chip.

The estimator (why this one): an **empirical-Bayes hierarchical least squares** on log
efficiencies. Each fitted log value of chip ``c`` (architecture ``a``) is a sum of effects

    theta[c, q] = sum over terms t on q's path of (g[t] + u[a, t] + v[c, t])  (+ beta z[c])

with ``g[t] ~ N(m0[t], s0[t]^2)`` (weak, ``s0 = 1``, except the precision steps' physical prior
of :mod:`simulator.published.fit`), ``u ~ N(0, tau_a^2)`` and ``v ~ N(0, tau_c^2)``. A quantity's
path chains related terms: ``matmul_fp8 = matmul + fp8_over_bf16`` and ``matmul_fp4 = matmul_fp8
+ fp4_over_fp8``, so a chip measured only in bf16 still gets its own fp8 value from its bf16 one
and the pooled fp8/bf16 step, and fp4 is its own value, as far from fp8 as the data say (with no
fp4 row, the step's prior).
The physical rule for an architecture nobody measured is the covariate ``z[c] = log(B_c / B_ref)``
(``B`` = bf16 peak FLOP/s over HBM bytes/s, the chip's FLOP:byte balance; ``B_ref`` the median
over the built-in profiles) on the compute terms matmul and attention: a chip whose FLOPs outrun
its memory keeps its tensor cores fed a smaller share of a real step (the glue between GEMMs that
the model does not itemise grows relative to the GEMMs). Its slope ``beta ~ N(0, 0.5^2)`` is
estimated with everything else, so with no evidence it stays near 0 (efficiencies transfer as
fractions of peak, unchanged).

Rows enter through a linearisation of meshcast's own forecast at the current values,
``log T_r(theta) ~ f0_r + J_r . (theta[c_r] - theta_lin_r)``, re-linearised by the caller
(:mod:`simulator.published.fit`). The forecast is then linear in the effects, so the marginal
likelihood of the variance components ``(sigma, tau_a, tau_c)`` is Gaussian in closed form:
``y ~ N(X m, X D X' + sigma^2 I)``; they are set by maximising it (type-II maximum likelihood,
with Chung et al. 2013's ``gamma(2, 0)`` penalty on each ``tau`` so that one or two measured
architectures do not collapse the spread between architectures to zero), which is what makes
the pooling *empirical*: a chip with many rows is fitted mostly on its own (its ``v`` is cheap
to move), a chip with few is pulled to its siblings, a chip with none takes
its architecture's value with the architecture's and the chip's spread in its uncertainty. The
effects are then the posterior mode with Huber weights (rows with doubtful configurations do not
pull the fit), and each value's standard deviation comes from the posterior covariance.

Why not per-chip fits with ad-hoc borrowing: they give a chip with two rows the same confidence
as one with seventy, and no uncertainty for a chip with none. Why not a full MCMC hierarchy:
a few hundred rows and ~100 effects need neither sampling nor more than numpy and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Each quantity's chain of effect terms (see module docstring).
PATHS = {"matmul": ("matmul",), "matmul_fp8": ("matmul", "fp8_over_bf16"),
         "matmul_fp4": ("matmul", "fp8_over_bf16", "fp4_over_fp8"), "attention": ("attention",),
         "memory": ("memory",), "gather": ("gather",),
         "attention_seq_half": ("attention_seq_half",),
         "attention_head_dim_half": ("attention_head_dim_half",), "net_switch": ("net_switch",),
         "net_torus": ("net_torus",), "net_fat_tree": ("net_fat_tree",)}
#: The terms that step from one matmul precision to the next narrower one.
PRECISION_STEPS = ("fp8_over_bf16", "fp4_over_fp8")
#: Quantities the FLOP:byte covariate moves.
COVARIATE = ("matmul", "matmul_fp8", "matmul_fp4", "attention")
PRIOR_SD = 1.0  # of each global effect, in log units: weak
BETA_SD = 0.5   # of the covariate slope
HUBER = 1.345   # Huber's constant, in units of sigma


@dataclass(frozen=True)
class Lineage:
    """Chips to estimate (every profile, measured or not), their architecture and covariate."""

    chips: tuple[str, ...]
    arch: dict[str, str]
    z: dict[str, float]


@dataclass
class Design:
    """Rows linearised: ``y`` log measured, ``f0`` log forecast at ``theta_lin`` (n, Q),
    ``J`` elasticities d log T / d log value (n, Q) over ``quantities``, ``chip`` per row."""

    quantities: tuple[str, ...]
    y: np.ndarray
    f0: np.ndarray
    J: np.ndarray
    theta_lin: np.ndarray
    chip: list[str]


@dataclass
class Posterior:
    """Fitted log values and their sd per (chip, quantity); the variance components."""

    mean: dict[tuple[str, str], float]
    sd: dict[tuple[str, str], float]
    sigma: float
    tau_arch: float
    tau_chip: float
    beta: float
    informed: set[str] = field(default_factory=set)  # quantities the rows narrowed (fit docstring)


class _Index:
    """Column of each effect: (level, group, term) with level global/arch/chip, plus beta."""

    def __init__(self, terms: list[str], lineage: Lineage) -> None:
        archs = sorted(set(lineage.arch.values()))
        self.cols: dict[tuple[str, str, str], int] = {}
        for t in terms:
            for key in [("global", "*", t)] + [("arch", a, t) for a in archs] + \
                       [("chip", c, t) for c in lineage.chips]:
                self.cols[key] = len(self.cols)
        self.beta = len(self.cols)
        self.n = self.beta + 1
        self.lineage = lineage

    def of(self, chip: str, q: str) -> np.ndarray:
        """d theta[chip, q] / d effects (a 0/1 row plus z on beta)."""
        a = np.zeros(self.n)
        for t in PATHS[q]:
            if ("global", "*", t) not in self.cols:
                continue
            for key in (("global", "*", t), ("arch", self.lineage.arch[chip], t), ("chip", chip, t)):
                a[self.cols[key]] = 1.0
        if q in COVARIATE:
            a[self.beta] = self.lineage.z[chip]
        return a


def _variances(kinds: np.ndarray, g_sd: np.ndarray, ta: float, tc: float) -> np.ndarray:
    """Prior variance of each effect: global (its term's sd), architecture, chip, slope."""
    return np.where(kinds == 0, g_sd ** 2, np.where(kinds == 1, ta ** 2,
                    np.where(kinds == 2, tc ** 2, BETA_SD ** 2)))


def _neg_marginal(logs: np.ndarray, X, r, kinds, g_sd) -> float:
    """-log N(r; 0, X D X' + sigma^2 I) with D from (tau_arch, tau_chip); r = y - X m."""
    sigma, ta, tc = np.exp(logs)
    d = _variances(kinds, g_sd, ta, tc)
    S = (X * d) @ X.T + sigma ** 2 * np.eye(len(r))
    _, logdet = np.linalg.slogdet(S)
    # Chung et al. 2013's gamma(2, 0) penalty on each tau: keeps them off zero when few groups
    # cannot tell their spread (type-II ML alone would call one measured architecture typical)
    return 0.5 * (logdet + r @ np.linalg.solve(S, r)) - logs[1] - logs[2]


#: A quantity is informed when the rows shrink its global effect's prior sd to this share or less.
INFORMED_SD = 0.9


def fit(design: Design, lineage: Lineage, prior: dict[str, float],
        prior_sd: dict[str, float] | None = None) -> Posterior:
    """The posterior of every (chip, quantity) value. ``prior[term]`` is the global effect's
    prior mean (log), ``prior_sd[term]`` its sd (default :data:`PRIOR_SD`). Every quantity some
    row depends on gets its posterior mode; it is *informed* (``Posterior.informed``) when the
    rows narrow its own global effect to :data:`INFORMED_SD` of its prior sd, else its value is
    the prior's more than the rows'."""
    from scipy.optimize import minimize

    used = {q for q, w in zip(design.quantities, np.abs(design.J).sum(axis=0)) if w > 0}
    terms = sorted({t for q in used for t in PATHS[q]})
    idx = _Index(terms, lineage)
    rows_of = [idx.of(c, q) for c in design.chip for q in design.quantities]
    A = np.array(rows_of).reshape(len(design.chip), len(design.quantities), idx.n)
    X = np.einsum("nq,nqp->np", design.J, A)  # a quantity no row uses has a zero column
    ystar = design.y - design.f0 + (design.J * design.theta_lin).sum(axis=1)
    m, g_sd = np.zeros(idx.n), np.full(idx.n, PRIOR_SD)
    kinds = np.full(idx.n, 3)
    for (level, _, t), col in idx.cols.items():
        kinds[col] = {"global": 0, "arch": 1, "chip": 2}[level]
        m[col] = prior.get(t, 0.0) if level == "global" else 0.0
        g_sd[col] = (prior_sd or {}).get(t, PRIOR_SD)
    res = minimize(_neg_marginal, np.log([0.1, 0.15, 0.15]),
                   args=(X, ystar - X @ m, kinds, g_sd), method="L-BFGS-B",
                   bounds=[(np.log(0.01), np.log(1.0))] * 3)
    sigma, ta, tc = np.exp(res.x)
    d = _variances(kinds, g_sd, ta, tc)
    w = np.ones(len(ystar))
    for _ in range(8):  # Huber IRLS on the posterior mode
        H = (X.T * w) @ X / sigma ** 2 + np.diag(1.0 / d)
        p = np.linalg.solve(H, (X.T * w) @ ystar / sigma ** 2 + m / d)
        z = np.abs(ystar - X @ p) / sigma
        w = np.where(z <= HUBER, 1.0, HUBER / np.maximum(z, 1e-12))
    cov = np.linalg.inv(H)
    cols = {q: idx.cols[("global", "*", PATHS[q][-1])] for q in used}
    informed = {q for q in used if np.sqrt(cov[cols[q], cols[q]]) <= INFORMED_SD * g_sd[cols[q]]}
    mean, sd = {}, {}
    for c in lineage.chips:
        for q in used:
            a = idx.of(c, q)
            mean[(c, q)] = float(a @ p)
            sd[(c, q)] = float(np.sqrt(max(a @ cov @ a, 0.0)))
    return Posterior(mean, sd, float(sigma), float(ta), float(tc), float(p[idx.beta]), informed)
