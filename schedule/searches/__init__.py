"""Schedule searches: ``search(fit_cfg, cost_cfg, eval_cfg, problem, key, **extra) -> Result`` (:mod:`.problem`;
``extra``: score_optimal's ``sigma_data``, ddss's loss).

``config.fit.method`` names one: 'score_optimal' (Algorithm 1, method.md section 4), 'trajectory' (the K-step
output closest to the model's own many-step ODE solution), 'ays' (Sabour et al. 2024), 'dp_elbo' (Watson et al. 2021, section 8) or 'ddss'
(Watson et al. 2022) or 'fewstep' (made for the solver of ``config.fit.sampler``) or 'polish' (fewstep's
gradient polish of a ladder the user names). Each sees the same :class:`Problem`: a score, a path and
draws of ``p_t``; the runner (``modes/fit_schedule.py``) builds it from a checkpoint or an exact score.
"""
from schedule.searches import ays, ddss, dp_elbo, fewstep, score_optimal, trajectory
from schedule.searches.problem import Problem, Result  # noqa: F401

SEARCHES = {
    'score_optimal': score_optimal.search,
    'trajectory': trajectory.search,
    'ays': ays.search,
    'dp_elbo': dp_elbo.search,
    'ddss': ddss.search,
    'fewstep': fewstep.search,
    'polish': fewstep.polish_search,
}
